namespace Dcache.Chaos;

/// <summary>What a self-removing leader's removal had to become, given how far it got before the leader's kill.</summary>
public sealed class SelfRemovalSurveyTests
{
    private static SelfRemovalSurvey Survey(ulong[] survivors, ulong[] holders, bool electionBegun = false) =>
        new(1, 500, survivors, survivors.ToDictionary(id => id, id => holders.Contains(id) ? 503UL : 499UL), electionBegun);

    [Fact]
    public void WithFourVotersAnEntryOnOneSurvivorMustTakeAtItsIndex()
    {
        var survey = Survey([2, 3, 4], holders: [3]);

        Assert.Equal<ulong>([3], survey.Holders!);
        Assert.True(survey.MustTakeAtProposedIndex([]));
        Assert.Null(survey.Judge([500], []));
        Assert.Contains("applied at index 510, not at index 500", survey.Judge([510], []), StringComparison.Ordinal);
        Assert.Contains("[3] of [2,3,4]", survey.Judge([510], []), StringComparison.Ordinal);
    }

    [Fact]
    public void WithSixVotersTheFourSurvivorsWithoutTheEntryAreAQuorumSoEitherOutcomeIsLegal()
    {
        var survey = Survey([2, 3, 4, 5, 6], holders: [3]);

        Assert.False(survey.MustTakeAtProposedIndex([]));
        Assert.Null(survey.Judge([510], []));
        Assert.Null(survey.Judge([500], []));

        // Two holders of five leave three without it, fewer than four.
        Assert.True(Survey([2, 3, 4, 5, 6], holders: [3, 6]).MustTakeAtProposedIndex([]));
    }

    [Fact]
    public void AnEntryOnEverySurvivorMustTakeAndOnNoneMayNot()
    {
        Assert.True(Survey([2, 3, 4], holders: [2, 3, 4]).MustTakeAtProposedIndex([]));
        Assert.True(Survey([2, 3, 4, 5, 6], holders: [2, 3, 4, 5, 6]).MustTakeAtProposedIndex([]));
        Assert.False(Survey([2, 3, 4], holders: []).MustTakeAtProposedIndex([]));
        Assert.Null(Survey([2, 3, 4], holders: []).Judge([510], []));
    }

    [Fact]
    public void AHolderRestartedSinceOrASurvivorNotAskedCountsAsWithoutTheEntry()
    {
        // Its status counted entries not yet on its disk: a restart may have lost the entry.
        var survey = Survey([2, 3, 4], holders: [3]);
        Assert.False(survey.MustTakeAtProposedIndex([3]));
        Assert.Null(survey.Judge([510], [3]));
        Assert.True(survey.MustTakeAtProposedIndex([2]));

        var notAsked = new SelfRemovalSurvey(1, 500, [2, 3, 4], new Dictionary<ulong, ulong> { [3] = 503, [4] = 499 }, false);
        Assert.Equal<ulong>([3], notAsked.Holders!);
        Assert.True(notAsked.MustTakeAtProposedIndex([]));
        Assert.Contains("2: not asked", notAsked.ToString(), StringComparison.Ordinal);
        // Two holders of five would leave three without it; with one of them not asked, four may be.
        Assert.False(new SelfRemovalSurvey(1, 500, [2, 3, 4, 5, 6], new Dictionary<ulong, ulong> { [2] = 499, [3] = 503, [4] = 499, [5] = 499 }, false).MustTakeAtProposedIndex([]));
    }

    [Fact]
    public void WithoutTheProposalsIndexOrOnceAnElectionBeganNothingIsRequired()
    {
        var unknown = new SelfRemovalSurvey(1, null, [2, 3, 4], new Dictionary<ulong, ulong> { [2] = 503, [3] = 499, [4] = 499 }, false);
        Assert.Null(unknown.Holders);
        Assert.False(unknown.MustTakeAtProposedIndex([]));
        Assert.Contains("shows no proposal", unknown.ToString(), StringComparison.Ordinal);

        Assert.False(Survey([2, 3, 4], holders: [3], electionBegun: true).MustTakeAtProposedIndex([]));
    }

    [Fact]
    public void SurvivorsApplyingTheRemovalAtDifferentIndexesIsAlwaysAProblem()
    {
        Assert.Contains("different indexes", Survey([2, 3, 4, 5, 6], holders: []).Judge([500, 510], []), StringComparison.Ordinal);
    }

    [Fact]
    public void TheIndexesAreReadFromTheNodesLogLinesOfThatNodeOnly()
    {
        const string leaderLog = """
            info: Dcache.Node.Services.AdminService[0] Operator membership change proposed: AddLearner node 4 at index 380
            info: Dcache.Node.Services.AdminService[0] Operator membership change proposed: Remove node 10 at index 390
            info: Dcache.Node.Services.AdminService[0] Operator membership change proposed: Remove node 1 at index 391
            """;
        Assert.Equal(391UL, SelfRemovalSurvey.ProposedRemovalIndex(leaderLog, 1));
        Assert.Equal(390UL, SelfRemovalSurvey.ProposedRemovalIndex(leaderLog, 10));
        Assert.Null(SelfRemovalSurvey.ProposedRemovalIndex(leaderLog, 2));

        const string survivorLog = """
            info: Dcache.Node.Consensus.RaftDriver[0] Membership change at index 385 applied: Remove node 10
            info: Dcache.Node.Consensus.RaftDriver[0] Membership change at index 391 applied: Remove node 1
            --- node 3 killed
            info: Dcache.Node.Consensus.RaftDriver[0] Membership change at index 391 applied: Remove node 1
            """;
        Assert.Equal<ulong>([391, 391], SelfRemovalSurvey.AppliedRemovalIndexes(survivorLog, 1));
        Assert.Equal<ulong>([385], SelfRemovalSurvey.AppliedRemovalIndexes(survivorLog, 10));
    }
}
