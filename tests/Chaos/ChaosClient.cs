using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Chaos;

/// <summary>A client of a chaos workload: a bounded loop of operations through the gateway, each recorded.</summary>
internal interface IChaosClient
{
    List<ChaosOp> History { get; }

    Task RunAsync(CancellationToken stop);
}

/// <summary>
/// One client of the load: a loop of random operations through the gateway, one at a time, each recorded with its
/// call time, return time and result. Bounded in count and in time.
/// </summary>
internal sealed class ChaosClient(int id, int gatewayPort, int seed) : IChaosClient
{
    /// <summary>Longer than the gateway's own deadline (4 s), so a reply normally arrives, as an error if need be.</summary>
    public static readonly TimeSpan ReplyTimeout = TimeSpan.FromSeconds(6);

    private static readonly TimeSpan ReconnectPause = TimeSpan.FromMilliseconds(50);

    public const int MaxOperations = 50_000;

    public static readonly string[] RegisterKeys = ["r0", "r1", "r2", "r3"];
    public static readonly string[] CounterKeys = ["n0", "n1"];
    public static readonly string[] ExpiringKeys = ["e0", "e1"];

    private readonly Random _random = new(seed);
    private GatewayConnection? _connection;
    private int _sequence;

    public List<ChaosOp> History { get; } = [];

    public async Task RunAsync(CancellationToken stop)
    {
        try
        {
            for (var i = 0; i < MaxOperations && !stop.IsCancellationRequested; i++)
            {
                var op = Next();
                await ExecuteAsync(op).ConfigureAwait(false);
                History.Add(op);
                if (op.Status != OpStatus.Ok)
                {
                    // Do not hammer a cluster that is failing; the pause is part of the load's shape, not a wait.
                    await Task.Delay(10, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _connection?.Dispose();
        }
    }

    private ChaosOp Next()
    {
        var n = ++_sequence;
        var roll = _random.Next(100);
        string Pick(string[] keys) => keys[_random.Next(keys.Length)];
        return roll switch
        {
            < 28 => new ChaosOp(id, OpKind.Set, Pick(RegisterKeys), $"v{id}.{n}"),
            < 52 => new ChaosOp(id, OpKind.Get, Pick(RegisterKeys), null),
            < 57 => new ChaosOp(id, OpKind.Del, Pick(RegisterKeys), null),
            < 69 => new ChaosOp(id, OpKind.Incr, Pick(CounterKeys), "1"),
            < 74 => new ChaosOp(id, OpKind.Get, Pick(CounterKeys), null),
            < 80 => new ChaosOp(id, OpKind.SetExpiring, Pick(ExpiringKeys), $"x{id}.{n}", 200 + _random.Next(800)),
            < 88 => new ChaosOp(id, OpKind.GetExpiring, Pick(ExpiringKeys), null),
            _ => new ChaosOp(id, OpKind.SetUnique, $"u{id}.{n}", $"w{id}.{n}"),
        };
    }

    private static string[] Arguments(ChaosOp op) => op.Kind switch
    {
        OpKind.Set or OpKind.SetUnique => ["SET", op.Key, op.Input!],
        OpKind.SetExpiring => ["SET", op.Key, op.Input!, "PX", op.TtlMs.ToString(CultureInfo.InvariantCulture)],
        OpKind.Get or OpKind.GetExpiring => ["GET", op.Key],
        OpKind.Del => ["DEL", op.Key],
        OpKind.Incr => ["INCR", op.Key],
        _ => throw new ArgumentOutOfRangeException(nameof(op)),
    };

    private async Task ExecuteAsync(ChaosOp op)
    {
        op.Call = Stopwatch.GetTimestamp();
        if (_connection is null)
        {
            try
            {
                _connection = await GatewayConnection.OpenAsync(gatewayPort, CancellationToken.None).ConfigureAwait(false);
            }
            catch (SocketException ex)
            {
                // Never sent (the gateway is down): not applied, whatever the command. A short pause keeps a client
                // from logging thousands of refused connections while the gateway restarts.
                op.Return = Stopwatch.GetTimestamp();
                op.Status = OpStatus.Failed;
                op.Error = $"{nameof(SocketException)} (not sent): {ex.Message}";
                await Task.Delay(ReconnectPause).ConfigureAwait(false);
                return;
            }
        }

        try
        {
            var reply = await _connection.CommandAsync(ReplyTimeout, Arguments(op)).ConfigureAwait(false);
            op.Return = Stopwatch.GetTimestamp();
            Interpret(op, reply);
        }
        catch (Exception ex) when (ex is TimeoutException or IOException or SocketException or FormatException)
        {
            op.Return = Stopwatch.GetTimestamp();
            op.Status = op.IsWrite ? OpStatus.Unknown : OpStatus.Failed;
            op.Error = ex.GetType().Name + ": " + ex.Message;
            _connection?.Dispose();
            _connection = null;
        }
    }

    /// <summary>Errors clients may get from the gateway under faults (docs/protocol.md); anything else is a finding.</summary>
    public static bool IsDocumentedClusterError(string error) =>
        error.StartsWith("TRYAGAIN ", StringComparison.Ordinal) || error.StartsWith("UNKNOWN ", StringComparison.Ordinal);

    private static void Interpret(ChaosOp op, RespValue reply)
    {
        if (reply.IsError)
        {
            var error = reply.Text ?? "";
            op.Error = error;
            op.Status = op.IsWrite && error.StartsWith("UNKNOWN ", StringComparison.Ordinal) ? OpStatus.Unknown : OpStatus.Failed;
            return;
        }

        op.Status = OpStatus.Ok;
        switch (op.Kind)
        {
            case OpKind.Get or OpKind.GetExpiring when reply.Type is '$' or '_':
                op.Output = reply.IsNull ? null : reply.Text;
                break;
            case OpKind.Incr or OpKind.Del when reply.Type == ':':
                op.Output = reply.Integer.ToString(CultureInfo.InvariantCulture);
                break;
            case OpKind.Set or OpKind.SetExpiring or OpKind.SetUnique when reply.Type == '+' && reply.Text == "OK":
                op.Output = "OK";
                break;
            default:
                op.Status = OpStatus.Failed;
                op.Error = $"unexpected reply {reply}";
                break;
        }
    }

    /// <summary>
    /// Runs one command until it gets a reply that is not a documented cluster error (those are retried until the
    /// deadline); used after the faults, when the cluster must answer.
    /// </summary>
    public static async Task<(RespValue Reply, long Call, long Return)> UntilAnsweredAsync(int gatewayPort, TimeSpan deadline, params string[] arguments)
    {
        var clock = Stopwatch.StartNew();
        string last = "no attempt";
        while (clock.Elapsed < deadline)
        {
            var call = Stopwatch.GetTimestamp();
            try
            {
                using var connection = await GatewayConnection.OpenAsync(gatewayPort, CancellationToken.None).ConfigureAwait(false);
                var reply = await connection.CommandAsync(ReplyTimeout, arguments).ConfigureAwait(false);
                if (!reply.IsError || !IsDocumentedClusterError(reply.Text ?? ""))
                {
                    return (reply, call, Stopwatch.GetTimestamp());
                }

                last = reply.ToString();
            }
            catch (Exception ex) when (ex is TimeoutException or IOException or SocketException)
            {
                last = ex.Message;
            }

            await Task.Delay(100).ConfigureAwait(false);
        }

        throw new TimeoutException($"{string.Join(' ', arguments.Take(2))} got no answer within {deadline.TotalSeconds:F0} s (last: {last})");
    }
}
