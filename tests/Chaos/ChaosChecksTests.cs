using System.Diagnostics;

namespace Dcache.Chaos;

/// <summary>The end-of-run checks catch what they exist for (synthetic histories; no cluster).</summary>
public sealed class ChaosChecksTests
{
    private static readonly long Ms = Stopwatch.Frequency / 1000;

    private static ChaosOp Op(OpKind kind, string key, string? input, OpStatus status, long callMs, long returnMs, string? output = null, int ttlMs = 0) =>
        new(0, kind, key, input, ttlMs) { Status = status, Call = callMs * Ms, Return = returnMs * Ms, Output = output };

    [Fact]
    public void ACounterOutsideAcknowledgedPlusUnknownIncrementsIsReported()
    {
        ChaosOp[] history =
        [
            Op(OpKind.Incr, "n0", "1", OpStatus.Ok, 0, 1, "1"),
            Op(OpKind.Incr, "n0", "1", OpStatus.Unknown, 2, 3),
            Op(OpKind.Incr, "n0", "1", OpStatus.Failed, 4, 5),
        ];

        Assert.Empty(ChaosChecks.Counters(history, new Dictionary<string, long> { ["n0"] = 1 }));
        Assert.Empty(ChaosChecks.Counters(history, new Dictionary<string, long> { ["n0"] = 2 }));
        Assert.Single(ChaosChecks.Counters(history, new Dictionary<string, long> { ["n0"] = 0 })); // an acknowledged INCR lost
        Assert.Single(ChaosChecks.Counters(history, new Dictionary<string, long> { ["n0"] = 3 })); // applied twice, or a TRYAGAIN applied
    }

    [Fact]
    public void ALostAcknowledgedWriteOnceKeyIsReportedAndAnUnknownOneMayBeMissing()
    {
        ChaosOp[] history =
        [
            Op(OpKind.SetUnique, "u0.1", "w0.1", OpStatus.Ok, 0, 1),
            Op(OpKind.SetUnique, "u0.2", "w0.2", OpStatus.Unknown, 2, 3),
        ];

        Assert.Empty(ChaosChecks.WriteOnceKeys(history, new Dictionary<string, string?> { ["u0.1"] = "w0.1", ["u0.2"] = null }));
        Assert.Empty(ChaosChecks.WriteOnceKeys(history, new Dictionary<string, string?> { ["u0.1"] = "w0.1", ["u0.2"] = "w0.2" }));
        Assert.Contains("lost", Assert.Single(ChaosChecks.WriteOnceKeys(history, new Dictionary<string, string?> { ["u0.1"] = null })), StringComparison.Ordinal);
        Assert.Single(ChaosChecks.WriteOnceKeys(history, new Dictionary<string, string?> { ["u0.1"] = "w0.1", ["u0.2"] = "other" }));
    }

    [Fact]
    public void ReadingAValuePastItsExpiryOrNeverWrittenIsReported()
    {
        var write = Op(OpKind.SetExpiring, "e0", "x0.1", OpStatus.Ok, 0, 10, ttlMs: 200);
        Assert.Empty(ChaosChecks.Expiry([write, Op(OpKind.GetExpiring, "e0", null, OpStatus.Ok, 150, 160, "x0.1")]));
        Assert.Empty(ChaosChecks.Expiry([write, Op(OpKind.GetExpiring, "e0", null, OpStatus.Ok, 400, 410)]));
        Assert.Single(ChaosChecks.Expiry([write, Op(OpKind.GetExpiring, "e0", null, OpStatus.Ok, 400, 410, "x0.1")]));
        Assert.Single(ChaosChecks.Expiry([write, Op(OpKind.GetExpiring, "e1", null, OpStatus.Ok, 20, 30, "x0.1")]));
    }

    [Fact]
    public void TheGatewaysSessionExpiredRetriesAreReadFromItsMetrics()
    {
        const string metrics = """
            # TYPE dcache_gateway_retries_total counter
            dcache_gateway_retries_total{otel_scope_name="Dcache.Gateway.Cluster",reason="not_leader"} 12 1700000000000
            dcache_gateway_retries_total{otel_scope_name="Dcache.Gateway.Cluster",reason="session_expired"} 7 1700000000000
            """;

        Assert.Equal(7, ChaosRun.SessionExpiredRetries(metrics));
        Assert.Equal(0, ChaosRun.SessionExpiredRetries("# no retries yet\n"));
    }

    [Fact]
    public void OnlyTheDocumentedClusterErrorsAndClientTimeoutsAreAccepted()
    {
        ChaosOp[] fine =
        [
            Op(OpKind.Set, "r0", "v0.1", OpStatus.Failed, 0, 1),
            Op(OpKind.Set, "r0", "v0.2", OpStatus.Unknown, 0, 1),
        ];
        fine[0].Error = "TRYAGAIN cluster unavailable, command not applied (safe to retry): no leader";
        fine[1].Error = "TimeoutException: no reply within 6.0 s";
        Assert.Empty(ChaosChecks.UndocumentedErrors(fine));

        var odd = Op(OpKind.Get, "r0", null, OpStatus.Failed, 0, 1);
        odd.Error = "ERR something else";
        Assert.Single(ChaosChecks.UndocumentedErrors([odd]));
    }

    [Fact]
    public void UnknownWritesReachTheCheckerWithoutAReturnAndFailedOnesNotAtAll()
    {
        var operations = ChaosChecks.ForChecker(
        [
            Op(OpKind.Set, "r0", "v0.1", OpStatus.Ok, 0, 1, "OK"),
            Op(OpKind.Set, "r0", "v0.2", OpStatus.Unknown, 2, 3),
            Op(OpKind.Set, "r0", "v0.3", OpStatus.Failed, 4, 5),
            Op(OpKind.SetUnique, "u0.4", "w0.4", OpStatus.Ok, 6, 7, "OK"),
        ]);

        Assert.Equal(2, operations.Count);
        Assert.NotNull(operations[0].ReturnTime);
        Assert.Null(operations[1].ReturnTime);
    }

    [Fact]
    public void ANodeStoppedByAFullDiskPassesOnlyWithExitCode3AndTheCauseNamed()
    {
        const string Stopped = "12:00:00.000 crit: Dcache.Node.Hosting.NodeRuntime[1] The node stops (exit code 3) because its Raft loop failed: "
            + "the Raft log in /d/raft-log could not be written durably: No space left on device : '/d/raft-log/log.0'\nApplication is shutting down...";

        Assert.Empty(ChaosChecks.DiskFullStop(2, 3, Stopped));
        Assert.Empty(ChaosChecks.DiskFullStop(2, 3, Stopped.Replace("No space left on device", "SQLite Error 13: 'database or disk is full'", StringComparison.Ordinal)));
        Assert.Contains("code 137", Assert.Single(ChaosChecks.DiskFullStop(2, 137, Stopped)), StringComparison.Ordinal); // killed, or crashed
        Assert.Contains("none", Assert.Single(ChaosChecks.DiskFullStop(2, null, Stopped)), StringComparison.Ordinal);
        Assert.Equal(2, ChaosChecks.DiskFullStop(2, 3, "Unhandled exception. System.IO.IOException: I/O error").Count()); // neither the cause nor the line
        Assert.StartsWith("12:00:00.000 crit", ChaosChecks.StopLine(Stopped), StringComparison.Ordinal);
    }

    [Fact]
    public void OutcomesDuringAGatewayCutCountOnlyWhatWasCalledThenAndAnsweredBeforeTheHeal()
    {
        ChaosOp[] history =
        [
            Op(OpKind.Set, "r0", "v1", OpStatus.Ok, 0, 150), // called before the cut
            Op(OpKind.Get, "r0", null, OpStatus.Ok, 110, 120, "v0"),
            Op(OpKind.Set, "r0", "v2", OpStatus.Unknown, 120, 160),
            Op(OpKind.Incr, "n0", "1", OpStatus.Ok, 130, 250), // answered after the heal
            Op(OpKind.Get, "r1", null, OpStatus.Failed, 140, 180),
            Op(OpKind.Set, "r0", "v3", OpStatus.Ok, 210, 220), // called after the heal
        ];

        Assert.Equal(
            "0 writes acknowledged, 1 reads served, 1 unknown, 1 not applied or not served; 1 still waiting at the heal",
            ChaosChecks.Outcomes(history, 100 * Ms, 200 * Ms));
    }
}
