using System.Diagnostics;

namespace Dcache.Chaos;

/// <summary>The bank workload's checks catch what they exist for (synthetic histories; no cluster).</summary>
public sealed class BankChecksTests
{
    private static readonly long Ms = Stopwatch.Frequency / 1000;
    private static readonly string[] Accounts = ["a", "b", "c"];

    private static ChaosOp Read(OpStatus status, params string?[] balances) =>
        new(0, OpKind.ReadAccounts, "accounts", null) { Status = status, Call = 1 * Ms, Return = 2 * Ms, Bank = new BankDetail(Accounts, balances) };

    private static ChaosOp Transfer(int amount, OpStatus status, string?[] read, string[]? exec = null) =>
        new(0, OpKind.Transfer, "a->b", amount.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            Status = status, Call = 3 * Ms, Return = 4 * Ms, Bank = new BankDetail(["a", "b"], read, exec),
        };

    [Fact]
    public void ASnapshotMustHoldTheTotalWithoutANegativeOrMissingBalance()
    {
        Assert.Null(BankChecks.Snapshot(Accounts, ["10", "0", "20"], 30));
        Assert.Contains("sum to 29", BankChecks.Snapshot(Accounts, ["10", "0", "19"], 30), StringComparison.Ordinal); // half a transfer
        Assert.Contains("negative", BankChecks.Snapshot(Accounts, ["-5", "15", "20"], 30), StringComparison.Ordinal);
        Assert.Contains("c holds nil", BankChecks.Snapshot(Accounts, ["10", "20", null], 30), StringComparison.Ordinal);
    }

    [Fact]
    public void ServedReadsAreCheckedAndUnservedOnesAreNot()
    {
        Assert.Empty(BankChecks.History([Read(OpStatus.Ok, "10", "0", "20"), Read(OpStatus.Failed, "1", "2", "3")], 30));
        Assert.Single(BankChecks.History([Read(OpStatus.Ok, "10", "1", "20")], 30));
    }

    [Fact]
    public void AnAppliedTransferMustAnswerTheBalancesItReadUnderWatchLessAndPlusItsAmount()
    {
        Assert.Empty(BankChecks.History([Transfer(5, OpStatus.Ok, ["10", "7"], ["5", "12"])], 30));
        // Something changed a between the WATCH and the EXEC, and the EXEC applied anyway: WATCH let a change through.
        Assert.Single(BankChecks.History([Transfer(5, OpStatus.Ok, ["10", "7"], ["3", "12"])], 30));
        // Only the first command applied.
        Assert.Single(BankChecks.History([Transfer(5, OpStatus.Ok, ["10", "7"], ["5", "7"])], 30));
        // Aborted by WATCH, unknown or not applied: nothing to compare; a negative balance read under WATCH is wrong whatever followed.
        Assert.Empty(BankChecks.History([Transfer(5, OpStatus.Failed, ["10", "7"]), Transfer(5, OpStatus.Unknown, ["10", "7"])], 30));
        Assert.Single(BankChecks.History([Transfer(5, OpStatus.Failed, ["-1", "7"])], 30));
    }

    [Fact]
    public void ManyProblemsAreShownFiveAndCounted()
    {
        var problems = BankChecks.History([.. Enumerable.Range(0, 8).Select(_ => Read(OpStatus.Ok, "1", "1", "1"))], 30).ToList();
        Assert.Equal(6, problems.Count);
        Assert.Contains("3 more", problems[^1], StringComparison.Ordinal);
    }

    [Fact]
    public void TheFormatGateRefusalsAreRecognisedByTheirDocumentedText()
    {
        Assert.True(BankChecks.IsFormatGateRefusal("ERR WATCH needs every node on a build that reads log format 8 (a rolling upgrade is in progress)"));
        Assert.True(BankChecks.IsFormatGateRefusal("ERR MULTI/EXEC needs every node on a build that reads log format 7 (a rolling upgrade is in progress)"));
        Assert.False(BankChecks.IsFormatGateRefusal("ERR EXECABORT Transaction discarded because of previous errors."));
        Assert.False(BankChecks.IsFormatGateRefusal(null));
    }
}
