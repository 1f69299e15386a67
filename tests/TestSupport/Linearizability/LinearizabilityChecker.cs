using System.Globalization;

namespace Dcache.TestSupport.Linearizability;

/// <summary>
/// Decides whether a history of key-value operations is linearizable: whether every operation can be given a
/// single instant between its call and its return such that, in the order of those instants, the results agree
/// with a sequential key-value store. Operations that never returned may take effect at any instant after their
/// call, or never.
/// </summary>
/// <remarks>
/// Keys are independent registers, and linearizability is compositional (a history is linearizable iff each
/// key's sub-history is), so the history is partitioned by key and each key is searched on its own: the cost of
/// the search grows with the concurrency within one key, not with the size of the whole history.
/// </remarks>
public static class LinearizabilityChecker
{
    /// <summary>Checks <paramref name="history"/>; never hangs, since each key's search is bounded by <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">An operation is malformed (null key, return before call, Put without input, Increment whose input is not an integer).</exception>
    public static CheckResult Check(IReadOnlyList<Operation> history, CheckOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(history);
        options ??= CheckOptions.Default;
        options.Validate();

        var byKey = new Dictionary<string, List<Operation>>(StringComparer.Ordinal);
        for (var i = 0; i < history.Count; i++)
        {
            var op = history[i];
            if (Problem(op) is { } problem)
            {
                throw new ArgumentException($"History entry {i} {problem}: {op}", nameof(history));
            }

            if (!byKey.TryGetValue(op.Key, out var ops))
            {
                ops = [];
                byKey.Add(op.Key, ops);
            }

            ops.Add(op);
        }

        var keys = byKey.Keys.ToArray();
        Array.Sort(keys, StringComparer.Ordinal);
        var results = new KeyResult[keys.Length];
        var outcome = CheckOutcome.Linearizable;
        for (var i = 0; i < keys.Length; i++)
        {
            results[i] = KeySearch.Run(keys[i], byKey[keys[i]], options);
            outcome = Combine(outcome, results[i].Outcome);
        }

        return new CheckResult(outcome, results);
    }

    private static CheckOutcome Combine(CheckOutcome overall, CheckOutcome key) =>
        overall == CheckOutcome.NotLinearizable || key == CheckOutcome.NotLinearizable ? CheckOutcome.NotLinearizable
        : overall == CheckOutcome.Unknown || key == CheckOutcome.Unknown ? CheckOutcome.Unknown
        : CheckOutcome.Linearizable;

    private static string? Problem(Operation? op) => op switch
    {
        null => "is null",
        { Key: null } => "has no key",
        { ReturnTime: { } returned } when returned < op.CallTime => "returns before it is called",
        { Kind: OperationKind.Put, Input: null } => "is a Put without an input value",
        { Kind: OperationKind.Increment } when !long.TryParse(op.Input, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _) =>
            "is an Increment whose input is not a decimal integer",
        { Kind: < OperationKind.Get or > OperationKind.Increment } => "has an unknown kind",
        _ => null,
    };
}
