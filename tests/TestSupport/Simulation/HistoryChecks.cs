using Dcache.TestSupport.Linearizability;

namespace Dcache.TestSupport.Simulation;

/// <summary>The linearizability check every simulation sweep applies to its client history.</summary>
public static class HistoryChecks
{
    /// <summary>
    /// Effort bound for the check of one key. Per-key concurrency is small (3-4 clients, 3 keys, unknown writes
    /// settled from the log), so real histories need far fewer states; hitting it means investigate.
    /// </summary>
    public const long StatesPerKey = 2_000_000;

    public static (HistoryVerdict Verdict, string Detail) Linearizable(IReadOnlyList<Operation> history)
    {
        var result = LinearizabilityChecker.Check(history, new CheckOptions { MaxStatesPerKey = StatesPerKey });
        var verdict = result.Outcome switch
        {
            CheckOutcome.Linearizable => HistoryVerdict.Linearizable,
            CheckOutcome.NotLinearizable => HistoryVerdict.NotLinearizable,
            _ => HistoryVerdict.Unknown,
        };
        return (verdict, verdict == HistoryVerdict.Linearizable ? "" : result.Describe());
    }
}
