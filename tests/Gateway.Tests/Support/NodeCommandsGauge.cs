using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Dcache.Gateway.Cluster;

namespace Dcache.Gateway.Tests.Support;

/// <summary>The cluster client's gauge of what each node holds (dcache.gateway.node.commands), read on demand.</summary>
internal sealed class NodeCommandsGauge
{
    /// <summary>The value of one series: <paramref name="node"/>'s commands in <paramref name="state"/>.</summary>
    public int Read(string node, string state) => Observe().Where(m => m.Node == node && m.State == state).Sum(m => m.Value);

    /// <summary>The nodes the gauge reports a series for now.</summary>
    public IReadOnlySet<string> Nodes() => Observe().Select(m => m.Node).ToHashSet(StringComparer.Ordinal);

    private static List<(string Node, string State, int Value)> Observe()
    {
        var measurements = new ConcurrentBag<(string Node, string State, int Value)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == CacheCluster.MeterName && instrument.Name == "dcache.gateway.node.commands")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<int>((_, value, tags, _) =>
        {
            var node = "";
            var state = "";
            foreach (var tag in tags)
            {
                node = tag.Key == "node" ? (string)tag.Value! : node;
                state = tag.Key == "state" ? (string)tag.Value! : state;
            }

            measurements.Add((node, state, value));
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return [.. measurements];
    }
}
