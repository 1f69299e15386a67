using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Dcache.Gateway.Resp;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

public sealed class MetricsTests
{
    [Fact]
    public async Task CommandsAreCountedByNameAndResultAndTimed()
    {
        var counts = new ConcurrentDictionary<(string Command, string Result), long>();
        var durations = new ConcurrentBag<(string Command, double Seconds)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == RespMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name == "dcache.gateway.commands")
            {
                counts.AddOrUpdate((Tag(tags, "command"), Tag(tags, "result")), value, (_, sum) => sum + value);
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, value, tags, _) => durations.Add((Tag(tags, "command"), value)));
        listener.Start();

        var server = new TestServer();
        await using var client = server.Connect();
        await client.CommandAsync("SETEX", "k", "10", "v");
        await client.CommandAsync("SETEX", "k", "x", "v");
        await client.CommandAsync("NO-SUCH-COMMAND-FOR-METRICS");
        server.Cluster.Script = c => c.OpCase == Command.OpOneofCase.Persist
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown } }
            : new Reply { Failure = new Failure { Kind = FailureKind.Unavailable } };
        await client.CommandAsync("PERSIST", "k");
        await client.CommandAsync("PTTL", "k");

        Assert.True(counts.GetValueOrDefault(("setex", RespMetrics.ResultOk)) >= 1);
        Assert.True(counts.GetValueOrDefault(("setex", RespMetrics.ResultError)) >= 1);
        Assert.True(counts.GetValueOrDefault(("unknown", RespMetrics.ResultError)) >= 1);
        Assert.True(counts.GetValueOrDefault(("persist", RespMetrics.ResultOutcomeUnknown)) >= 1);
        Assert.True(counts.GetValueOrDefault(("pttl", RespMetrics.ResultNotApplied)) >= 1);
        Assert.Contains(durations, d => d.Command == "setex" && d.Seconds >= 0);
    }

    [Fact]
    public async Task ACommandTheClusterClientThrewForCountsAsAnUnknownOutcomeForAWriteAndAsNotAppliedForARead()
    {
        // The reply is then an error the gateway worded itself ("UNKNOWN ..." or "TRYAGAIN ..."), not a cluster failure.
        var counts = new ConcurrentDictionary<(string Command, string Result), long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == RespMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            if (instrument.Name == "dcache.gateway.commands")
            {
                counts.AddOrUpdate((Tag(tags, "command"), Tag(tags, "result")), value, (_, sum) => sum + value);
            }
        });
        listener.Start();

        var server = new TestServer();
        server.Cluster.Script = _ => throw new InvalidOperationException("a bug in the cluster client");
        await using var client = server.Connect();
        Assert.StartsWith("-UNKNOWN ", (await client.CommandAsync("GETDEL", "k")).ToString(), StringComparison.Ordinal);
        Assert.StartsWith("-TRYAGAIN ", (await client.CommandAsync("PEXPIRETIME", "k")).ToString(), StringComparison.Ordinal);

        Assert.True(counts.GetValueOrDefault(("getdel", RespMetrics.ResultOutcomeUnknown)) >= 1);
        Assert.Equal(0, counts.GetValueOrDefault(("getdel", RespMetrics.ResultError)));
        Assert.True(counts.GetValueOrDefault(("pexpiretime", RespMetrics.ResultNotApplied)) >= 1);
    }

    private static string Tag(ReadOnlySpan<KeyValuePair<string, object?>> tags, string name)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == name)
            {
                return (string)tag.Value!;
            }
        }

        return "";
    }
}
