using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace Dcache.Gateway.Resp;

/// <summary>
/// The front end's metrics (meter <see cref="MeterName"/>; the host adds it to OpenTelemetry with AddMeter):
/// commands by name and result, command latency, connections. Recording costs nothing while nobody listens.
/// </summary>
public static class RespMetrics
{
    public const string MeterName = "Dcache.Gateway.Resp";

    /// <summary>Result tag values: the reply was a result, a command error, a not-applied cluster error, an unknown outcome.</summary>
    public const string ResultOk = "ok";
    public const string ResultError = "error";
    public const string ResultNotApplied = "not_applied";
    public const string ResultOutcomeUnknown = "outcome_unknown";

    private static readonly Meter Meter = new(MeterName);

    private static readonly Counter<long> Commands = Meter.CreateCounter<long>(
        "dcache.gateway.commands", "{command}", "Commands answered, by command and result");

    private static readonly Histogram<double> CommandDuration = Meter.CreateHistogram(
        "dcache.gateway.command.duration",
        "s",
        "Time from a command's dispatch to its reply being ready, by command",
        tags: null,
        advice: new InstrumentAdvice<double>
        {
            // Sub-millisecond resolution where the cache lives, up to the clients' 5 s timeouts.
            HistogramBucketBoundaries = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
        });

    private static readonly UpDownCounter<long> Connections = Meter.CreateUpDownCounter<long>(
        "dcache.gateway.connections", "{connection}", "Client connections open now");

    /// <summary>The reasons a connection is closed by the gateway, the values of its reason tag.</summary>
    internal static readonly string[] CloseReasons = ["protocol_error", "output_buffer_limit", "idle_timeout", "failure"];

    // Observed rather than added to, so that both are exported (at 0, each reason) before the first event: an alert on
    // their rate then sees 0, not no data. Static like the meter: one gateway per process.
    private static long _connectionsRejected;
    private static readonly long[] ConnectionsClosedCounts = new long[CloseReasons.Length];

    private static readonly ObservableCounter<long> ConnectionsRejected = Meter.CreateObservableCounter(
        "dcache.gateway.connections.rejected", () => Interlocked.Read(ref _connectionsRejected), "{connection}",
        "Connections refused because maxclients were connected");

    private static readonly ObservableCounter<long> ConnectionsClosed = Meter.CreateObservableCounter(
        "dcache.gateway.connections.closed_by_gateway",
        () => CloseReasons.Select((reason, i) => new Measurement<long>(Interlocked.Read(ref ConnectionsClosedCounts[i]), new KeyValuePair<string, object?>("reason", reason))),
        "{connection}",
        "Connections the gateway closed, by reason");

    internal static void CommandAnswered(string command, string result, long startTimestamp)
    {
        if (Commands.Enabled)
        {
            Commands.Add(1, new KeyValuePair<string, object?>("command", command), new KeyValuePair<string, object?>("result", result));
        }

        if (CommandDuration.Enabled)
        {
            CommandDuration.Record(Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds, new KeyValuePair<string, object?>("command", command));
        }
    }

    internal static void ConnectionOpened() => Connections.Add(1);

    internal static void ConnectionEnded() => Connections.Add(-1);

    internal static void ConnectionRejected() => Interlocked.Increment(ref _connectionsRejected);

    /// <summary>Reasons: <see cref="CloseReasons"/>.</summary>
    internal static void ConnectionClosedByGateway(string reason) =>
        Interlocked.Increment(ref ConnectionsClosedCounts[Array.IndexOf(CloseReasons, reason)]);
}
