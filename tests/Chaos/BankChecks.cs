using System.Globalization;

namespace Dcache.Chaos;

/// <summary>What the bank workload's clients did, for the schedule's result line.</summary>
internal sealed record BankTally(int Acknowledged, int Aborted, int Declined, int Unknown, int NotApplied, int FormatGated, int ReadsChecked)
{
    public static BankTally Of(IReadOnlyCollection<ChaosOp> history)
    {
        var transfers = history.Where(op => op.Kind == OpKind.Transfer).ToList();
        return new BankTally(
            transfers.Count(op => op.Status == OpStatus.Ok),
            transfers.Count(op => op.Output?.StartsWith("aborted", StringComparison.Ordinal) == true),
            transfers.Count(op => op.Output?.StartsWith("declined", StringComparison.Ordinal) == true),
            transfers.Count(op => op.Status == OpStatus.Unknown),
            transfers.Count(op => op.Status == OpStatus.Failed && op.Error is not null),
            history.Count(op => BankChecks.IsFormatGateRefusal(op.Error)),
            history.Count(op => op.Kind is OpKind.ReadAccounts or OpKind.ReadAccountsInTransaction && op.Status == OpStatus.Ok));
    }

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"bank: {Acknowledged} transfers acknowledged, {Aborted} aborted by WATCH, {Declined} declined (short balance), {Unknown} unknown, {NotApplied} not applied ({FormatGated} operations refused by the log format gate); {ReadsChecked} reads of every account checked");
}

/// <summary>
/// The bank workload's checks (<see cref="BankClient"/>): money is neither made nor lost, whatever the faults. A
/// transfer of unknown outcome needs no allowance: it applied whole or not at all, and either keeps the total.
/// </summary>
internal static class BankChecks
{
    /// <summary>How many problems of one check are spelled out; the rest are counted.</summary>
    private const int Shown = 5;

    /// <summary>
    /// The leader's refusal of a transaction or a WATCH while it counts some member as reading an older log format:
    /// documented (operations.md, "Upgrade to a build that reads a newer log entry format") for a rolling upgrade, and
    /// also given while a member of the same build has not been heard from since the leader's process started (a
    /// joiner not yet answering, a member down). Not applied; the bank counts these apart from the cluster errors.
    /// </summary>
    public static bool IsFormatGateRefusal(string? error) =>
        error is not null
        && (error.StartsWith("ERR MULTI/EXEC needs every node on a build that reads log format ", StringComparison.Ordinal)
            || error.StartsWith("ERR WATCH needs every node on a build that reads log format ", StringComparison.Ordinal));

    /// <summary>
    /// A read of every account (one MGET, an MGET inside MULTI/EXEC, or the final read): each account holds an
    /// integer, none is negative, and together they hold <paramref name="total"/>. Null when it holds.
    /// </summary>
    public static string? Snapshot(IReadOnlyList<string> accounts, IReadOnlyList<string?> balances, long total)
    {
        var values = new List<long>();
        for (var i = 0; i < balances.Count; i++)
        {
            if (!long.TryParse(balances[i], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
            {
                return $"{accounts[i]} holds {balances[i] ?? "nil"}, not a balance";
            }

            values.Add(value);
        }

        var sum = values.Sum();
        var negative = values.Select((v, i) => (v, i)).Where(p => p.v < 0).Select(p => $"{accounts[p.i]}={p.v}").ToList();
        return sum != total ? $"the accounts sum to {sum}, not {total}"
            : negative.Count > 0 ? $"negative balance: {string.Join(", ", negative)}"
            : null;
    }

    /// <summary>
    /// Every served read of every account is a <see cref="Snapshot"/> that holds; every balance a transfer read under
    /// WATCH is an integer and not negative; and an applied transfer's EXEC answered exactly the balances it read, less
    /// and plus its amount (WATCH let nothing change them in between).
    /// </summary>
    public static IEnumerable<string> History(IReadOnlyCollection<ChaosOp> history, long total)
    {
        var problems = new List<string>();
        foreach (var op in history.OrderBy(op => op.Call))
        {
            if (op.Bank is not { } bank)
            {
                continue;
            }

            if (op.Kind is OpKind.ReadAccounts or OpKind.ReadAccountsInTransaction && op.Status == OpStatus.Ok
                && Snapshot(bank.Accounts, bank.Balances, total) is { } wrong)
            {
                problems.Add($"{wrong}: {op}");
            }
            else if (op.Kind == OpKind.Transfer)
            {
                problems.AddRange(Transfer(op, bank));
            }
        }

        return problems.Count <= Shown ? problems : [.. problems.Take(Shown), $"... and {problems.Count - Shown} more bank problems"];
    }

    private static IEnumerable<string> Transfer(ChaosOp op, BankDetail bank)
    {
        var read = bank.Balances.Select(b => long.TryParse(b, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : (long?)null).ToList();
        if (read.Any(v => v is null or < 0))
        {
            yield return $"a transfer read {string.Join(", ", bank.Accounts.Zip(bank.Balances, (a, b) => $"{a}={b ?? "nil"}"))} under WATCH: {op}";
            yield break;
        }

        if (op.Status != OpStatus.Ok)
        {
            yield break;
        }

        var amount = long.Parse(op.Input!, CultureInfo.InvariantCulture);
        string[] expected = [(read[0]!.Value - amount).ToString(CultureInfo.InvariantCulture), (read[1]!.Value + amount).ToString(CultureInfo.InvariantCulture)];
        if (bank.Exec is not { } exec || !exec.SequenceEqual(expected))
        {
            yield return $"an applied transfer of {amount} answered {(bank.Exec is null ? "nothing" : string.Join(", ", bank.Exec))} after reading {bank.Balances[0]}, {bank.Balances[1]} under WATCH (expected {string.Join(", ", expected)}): {op}";
        }
    }
}
