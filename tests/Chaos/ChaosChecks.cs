using System.Diagnostics;
using System.Globalization;
using Dcache.TestSupport.Linearizability;

namespace Dcache.Chaos;

/// <summary>The end-of-run checks that need only the client history and what was read back after the restart.</summary>
internal static class ChaosChecks
{
    /// <summary>Slack for the expiry check: the node's and the client's clocks are one clock, read at different moments.</summary>
    private static readonly long ExpirySlack = Stopwatch.Frequency / 20;

    /// <summary>
    /// The register and counter keys' history as the checker takes it: answered operations with their return time,
    /// writes of unknown outcome without one, failed operations left out.
    /// </summary>
    public static List<Operation> ForChecker(IEnumerable<ChaosOp> history)
    {
        var operations = new List<Operation>();
        foreach (var op in history)
        {
            if (op.Status == OpStatus.Failed || op.Kind is not (OpKind.Set or OpKind.Get or OpKind.Del or OpKind.Incr))
            {
                continue;
            }

            var kind = op.Kind switch
            {
                OpKind.Set => OperationKind.Put,
                OpKind.Get => OperationKind.Get,
                OpKind.Del => OperationKind.Delete,
                _ => OperationKind.Increment,
            };
            var returned = op.Status == OpStatus.Ok ? op.Return : (long?)null;
            operations.Add(new Operation(op.Client, kind, op.Key, op.Input, op.Status == OpStatus.Ok ? op.Output : null, op.Call, returned));
        }

        return operations;
    }

    /// <summary>Every counter equals its acknowledged increments plus at most the unknown ones.</summary>
    public static IEnumerable<string> Counters(IReadOnlyCollection<ChaosOp> history, IReadOnlyDictionary<string, long> finalValues)
    {
        foreach (var (key, value) in finalValues)
        {
            var acknowledged = history.Count(op => op.Kind == OpKind.Incr && op.Key == key && op.Status == OpStatus.Ok);
            var unknown = history.Count(op => op.Kind == OpKind.Incr && op.Key == key && op.Status == OpStatus.Unknown);
            if (value < acknowledged || value > acknowledged + unknown)
            {
                yield return $"counter {key} is {value} after the restart, but {acknowledged} increments were acknowledged and {unknown} unknown";
            }
        }
    }

    /// <summary>Every acknowledged write-once key holds its value after the restart; an unknown one holds it or nothing.</summary>
    public static IEnumerable<string> WriteOnceKeys(IReadOnlyCollection<ChaosOp> history, IReadOnlyDictionary<string, string?> finalValues)
    {
        foreach (var op in history.Where(op => op.Kind == OpKind.SetUnique && op.Status != OpStatus.Failed))
        {
            var value = finalValues.GetValueOrDefault(op.Key);
            if (op.Status == OpStatus.Ok && value != op.Input)
            {
                yield return $"acknowledged write lost: {op.Key}={op.Input} reads {value ?? "nil"} after the restart";
            }
            else if (value is not null && value != op.Input)
            {
                yield return $"{op.Key} reads {value}, which was never written to it";
            }
        }
    }

    /// <summary>
    /// A read of an expiring key returns nothing or a value written to that key, and never one whose expiry had
    /// passed when the read was called (the expiry is stamped after the write's call and before its return). This
    /// holds through clock jumps too: nodes stamp and read by the median of the voters' clocks, not their own.
    /// </summary>
    public static IEnumerable<string> Expiry(IReadOnlyCollection<ChaosOp> history)
    {
        var writes = history.Where(op => op.Kind == OpKind.SetExpiring && op.Status != OpStatus.Failed).ToDictionary(op => op.Input!, StringComparer.Ordinal);
        foreach (var read in history.Where(op => op.Kind == OpKind.GetExpiring && op.Status == OpStatus.Ok && op.Output is not null))
        {
            if (!writes.TryGetValue(read.Output!, out var write) || write.Key != read.Key)
            {
                yield return $"{read.Key} read {read.Output}, which was never written to it: {read}";
                continue;
            }

            if (write.Status == OpStatus.Ok && read.Call > write.Return + (write.TtlMs * Stopwatch.Frequency / 1000) + ExpirySlack)
            {
                yield return string.Create(CultureInfo.InvariantCulture,
                    $"{read.Key} read {read.Output} {ChaosOp.Milliseconds(read.Call - write.Return):F0} ms after its write returned, past its {write.TtlMs} ms expiry: {read}");
            }
        }
    }

    /// <summary>Exit code of a node that stopped because its Raft loop failed (NodeRuntime.FailedExitCode, operations.md).</summary>
    public const int FailedExitCode = 3;

    /// <summary>
    /// A node whose disk filled up stopped as operations.md says: exit code 3 (not a crash, not a kill), with a
    /// critical line that names the exit code and the full disk (FASTER's log says ENOSPC; SQLite, should its term
    /// write hit the full disk first, says "database or disk is full").
    /// </summary>
    public static IEnumerable<string> DiskFullStop(ulong node, int? exitCode, string output)
    {
        if (exitCode != FailedExitCode)
        {
            yield return $"node {node} exited with code {exitCode?.ToString(CultureInfo.InvariantCulture) ?? "none"} when its disk filled up, not {FailedExitCode}: {StopLine(output)}";
        }

        if (!output.Contains("No space left on device", StringComparison.Ordinal) && !output.Contains("database or disk is full", StringComparison.Ordinal))
        {
            yield return $"node {node}'s output does not name the full disk: {StopLine(output)}";
        }

        if (!output.Contains($"exit code {FailedExitCode}", StringComparison.Ordinal))
        {
            yield return $"node {node} did not log that it stops with exit code {FailedExitCode}";
        }
    }

    /// <summary>The line in which a node says why it stops, or its last line.</summary>
    public static string StopLine(string output)
    {
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.LastOrDefault(l => l.Contains("The node stops", StringComparison.Ordinal)) ?? lines.LastOrDefault() ?? "(no output)";
    }

    /// <summary>
    /// What became of the clients' operations called between <paramref name="from"/> and <paramref name="to"/>
    /// (Stopwatch timestamps, a fault's start and its heal): those answered before the heal, by outcome, and how many
    /// were still waiting for their answer when it came.
    /// </summary>
    public static string Outcomes(IReadOnlyCollection<ChaosOp> history, long from, long to)
    {
        var called = history.Where(op => op.Call >= from && op.Call <= to).ToList();
        var answered = called.Where(op => op.Return <= to).ToList();
        return string.Create(CultureInfo.InvariantCulture,
            $"{answered.Count(op => op.IsWrite && op.Status == OpStatus.Ok)} writes acknowledged, {answered.Count(op => !op.IsWrite && op.Status == OpStatus.Ok)} reads served, "
            + $"{answered.Count(op => op.Status == OpStatus.Unknown)} unknown, {answered.Count(op => op.Status == OpStatus.Failed)} not applied or not served; "
            + $"{called.Count - answered.Count} still waiting at the heal");
    }

    /// <summary>Errors clients got that docs/protocol.md does not list for cluster failures.</summary>
    public static IEnumerable<string> UndocumentedErrors(IReadOnlyCollection<ChaosOp> history) =>
        history.Where(op => op.Error is { } e && !ChaosClient.IsDocumentedClusterError(e) && !e.StartsWith(nameof(TimeoutException), StringComparison.Ordinal)
                            && !e.StartsWith(nameof(IOException), StringComparison.Ordinal) && !e.StartsWith(nameof(System.Net.Sockets.SocketException), StringComparison.Ordinal))
            .Select(op => op.Error!)
            .Distinct()
            .Take(5)
            .Select(e => $"undocumented error: {e}");
}
