using System.Globalization;
using Dcache.TestSupport.Linearizability;

namespace Dcache.Chaos;

internal enum ScheduleVerdict
{
    /// <summary>Every check passed and the history was proved linearizable.</summary>
    Passed,

    /// <summary>No check failed, but the linearizability search ran out of budget on some key: not a pass.</summary>
    Inconclusive,

    /// <summary>A check failed (or the cluster did not recover).</summary>
    Failed,
}

/// <summary>What one fault schedule's run found.</summary>
internal sealed record ScheduleResult(
    FaultSchedule Schedule,
    ScheduleVerdict Verdict,
    CheckOutcome Linearizability,
    IReadOnlyList<string> Problems,
    int Operations,
    int Acknowledged,
    int Unknown,
    int NotApplied,
    long SessionExpiredRetries,
    int SessionExpiredUnknown,
    TimeSpan Duration,
    string? ArtifactsDirectory,
    BankTally? Bank = null)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Verdict} [{Schedule}] {Operations} ops ({Acknowledged} answered, {Unknown} unknown, {NotApplied} not applied or not served; {SessionExpiredRetries} session_expired retries, {SessionExpiredUnknown} unknown for an expired session), {(Bank is null ? $"linearizability {Linearizability}" : Bank.ToString())}, {Duration.TotalSeconds:F1} s")
        + (Problems.Count == 0 ? "" : Environment.NewLine + "  " + string.Join(Environment.NewLine + "  ", Problems));
}
