namespace Dcache.Raft;

/// <summary>
/// The log every founding member of a new cluster starts with: one committed membership change per founding member
/// (voters, then learners, in id order), all in term 1, each carrying that member's context (its address). Because
/// the founding membership lives in the log rather than in an index-0 snapshot that is never sent, a node added
/// later learns it by replaying the log from index 1, as every other member did. Founding members write the same entries when they are given the same addresses; the
/// contexts are opaque to Raft, which compares entries by index and term only.
/// </summary>
public static class ClusterBootstrap
{
    public const ulong Term = 1;

    public static (HardState HardState, IReadOnlyList<Entry> Entries) InitialLog(Membership membership)
    {
        if (membership.Voters.Count == 0)
        {
            throw new ArgumentException("a cluster needs at least one voter", nameof(membership));
        }

        var entries = new List<Entry>();
        foreach (var voter in membership.Voters)
        {
            entries.Add(new Entry((ulong)entries.Count + 1, Term, EntryType.ConfChange, new ConfChange(ConfChangeType.AddVoter, voter, membership.ContextOf(voter)).Encode()));
        }

        foreach (var learner in membership.Learners)
        {
            entries.Add(new Entry((ulong)entries.Count + 1, Term, EntryType.ConfChange, new ConfChange(ConfChangeType.AddLearner, learner, membership.ContextOf(learner)).Encode()));
        }

        return (new HardState(Term, 0, (ulong)entries.Count), entries);
    }
}
