namespace Dcache.TestSupport.Linearizability;

/// <summary>Bounds on the work the checker may do. The search is exponential in the worst case, so it must be bounded.</summary>
public sealed class CheckOptions
{
    /// <summary>
    /// Default for <see cref="MaxStatesPerKey"/>: well under a second per key, enough to decide histories of tens
    /// of thousands of operations per key from about five concurrent clients.
    /// </summary>
    public const long DefaultMaxStatesPerKey = 5_000_000;

    /// <summary>
    /// The number of search nodes (steps of the search loop) one key may explore before its verdict becomes
    /// <see cref="CheckOutcome.Unknown"/>. Deterministic: the same history always gets the same verdict.
    /// Time and memory grow linearly with it: roughly 100 ns and typically 10 bytes per node (up to about 100 bytes
    /// when many operations that never returned stay unlinearized).
    /// </summary>
    public long MaxStatesPerKey { get; init; } = DefaultMaxStatesPerKey;

    /// <summary>Optional wall-clock bound per key; when exceeded the key's verdict is <see cref="CheckOutcome.Unknown"/>. Not deterministic.</summary>
    public TimeSpan? TimeBudgetPerKey { get; init; }

    /// <summary>
    /// How many operations of a failing key's sub-history the explanation prints. Longer sub-histories are cut
    /// to a window around the point where the search got stuck.
    /// </summary>
    public int MaxOperationsInExplanation { get; init; } = 200;

    internal static CheckOptions Default { get; } = new();

    internal void Validate()
    {
        if (MaxStatesPerKey <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxStatesPerKey), MaxStatesPerKey, "Must be positive.");
        }

        if (TimeBudgetPerKey is { } budget && budget <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(TimeBudgetPerKey), budget, "Must be positive when set.");
        }

        if (MaxOperationsInExplanation <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxOperationsInExplanation), MaxOperationsInExplanation, "Must be positive.");
        }
    }
}
