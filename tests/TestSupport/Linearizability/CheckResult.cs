using System.Text;

namespace Dcache.TestSupport.Linearizability;

/// <summary>The verdict for one key's sub-history.</summary>
/// <param name="Key">The key.</param>
/// <param name="Outcome">The key's verdict.</param>
/// <param name="Operations">How many operations of the history touched this key.</param>
/// <param name="StatesExplored">Search nodes explored; compare with <see cref="CheckOptions.MaxStatesPerKey"/>.</param>
/// <param name="Explanation">
/// For <see cref="CheckOutcome.NotLinearizable"/> and <see cref="CheckOutcome.Unknown"/>: the key's sub-history
/// sorted by call time and the longest linearizable prefix the search found. Null when linearizable.
/// </param>
public sealed record KeyResult(string Key, CheckOutcome Outcome, int Operations, long StatesExplored, string? Explanation)
{
    public override string ToString() =>
        $"key \"{Key}\": {Outcome} ({Operations} operations, {StatesExplored} states explored)";
}

/// <summary>The verdict for a whole history: <see cref="CheckOutcome.NotLinearizable"/> if any key is, else
/// <see cref="CheckOutcome.Unknown"/> if any key is, else <see cref="CheckOutcome.Linearizable"/>.</summary>
/// <param name="Outcome">The overall verdict.</param>
/// <param name="Keys">One result per key, ordered by key (ordinal).</param>
public sealed record CheckResult(CheckOutcome Outcome, IReadOnlyList<KeyResult> Keys)
{
    /// <summary>The keys whose verdict is not <see cref="CheckOutcome.Linearizable"/>, violations first.</summary>
    public IEnumerable<KeyResult> Problems =>
        Keys.Where(k => k.Outcome == CheckOutcome.NotLinearizable)
            .Concat(Keys.Where(k => k.Outcome == CheckOutcome.Unknown));

    /// <summary>A human-readable report: the verdict, and for every key that is not linearizable (or unknown) why.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        var operations = Keys.Sum(k => (long)k.Operations);
        sb.Append("Linearizability: ").Append(Outcome)
          .Append(" (").Append(Keys.Count).Append(" keys, ").Append(operations).Append(" operations");
        var violations = Keys.Count(k => k.Outcome == CheckOutcome.NotLinearizable);
        var unknown = Keys.Count(k => k.Outcome == CheckOutcome.Unknown);
        if (violations > 0)
        {
            sb.Append(", ").Append(violations).Append(" not linearizable");
        }

        if (unknown > 0)
        {
            sb.Append(", ").Append(unknown).Append(" unknown");
        }

        sb.Append(')');
        foreach (var key in Problems)
        {
            sb.AppendLine().AppendLine().Append(key.Explanation ?? key.ToString());
        }

        return sb.ToString();
    }

    public override string ToString() => Describe();
}
