using System.Globalization;
using System.Text.RegularExpressions;

namespace Dcache.Chaos;

/// <summary>
/// How far a leader killed with its own removal in flight (<see cref="MidChangeKill.LeaderRemovingItself"/>) had got that
/// removal, read right after the kill: the index it proposed the removal at (its log), and which survivors' logs reached
/// that index (their status). Says afterwards whether the removal had to take at that index, or either outcome is legal.
/// </summary>
/// <remarks>
/// Which outcomes are legal. The removal's entry E sits at index <see cref="ProposedIndex"/>, in the dead leader's term,
/// the highest term any log holds. A configuration takes effect when its entry is applied, so until E applies the
/// survivors count the dead leader among the voters: four (three founders and the joiner; a quorum is three) or six
/// (five founders and the joiner; four). A survivor holding E refuses its vote to a candidate without it (Raft's
/// election restriction: E is its last entry's term at an index the candidate's log does not reach), so a candidate
/// without E wins only with the votes of survivors without E alone.
/// <list type="bullet">
/// <item>Those are fewer than a quorum (E reached one survivor of three, as <see cref="SelfRemovalCut.AllButOne"/> aims
/// at with four voters; or E reached every survivor): every leader from now on holds E, none ever overwrites it, and the
/// first entry a leader commits in its own term commits E with it. The removal must apply at E's index; at any other
/// index it is a violation.</item>
/// <item>They are a quorum (E reached nobody; or one survivor of five, with six voters: the four others are a quorum
/// of six without it): they may elect one of themselves, whose log overwrites E where it was, and the removal takes
/// only when the operator asks again (a later index); or a survivor holding E wins, and it applies at E's index. Both
/// are legal.</item>
/// </list>
/// A survivor's status counts entries not yet on its disk, so a survivor restarted since the survey may have lost E: it,
/// and any survivor not asked (paused, or not answering), counts as without E, which can only make the rule above
/// demand less. The removal is told from another entry by its index alone (the log line of its application names no
/// term): a retried removal that happened to land at the same index would pass for it.
/// </remarks>
/// <param name="Leaving">The leader killed removing itself.</param>
/// <param name="ProposedIndex">The index its log says it proposed the removal at; null when no such line was captured (killed before it proposed, or before the line was written).</param>
/// <param name="Survivors">The members but it, when it was killed.</param>
/// <param name="LastIndexes">Each survivor's last log index, as its status said right after the kill (survivors that did not answer are missing).</param>
/// <param name="ElectionBegun">
/// A survivor's term had moved past the dead leader's when asked (or that term is unknown): a new leader may already
/// have written entries of its own at the removal's index, which a last index cannot tell from the removal.
/// </param>
internal sealed record SelfRemovalSurvey(ulong Leaving, ulong? ProposedIndex, IReadOnlyList<ulong> Survivors, IReadOnlyDictionary<ulong, ulong> LastIndexes, bool ElectionBegun)
{
    /// <summary>The process each survivor answered from (its pid), so that a survivor restarted since is seen.</summary>
    public IReadOnlyDictionary<ulong, int?> Processes { get; init; } = new Dictionary<ulong, int?>();

    /// <summary>The survivors whose logs reached the removal's index when asked (null when that index is unknown).</summary>
    public IReadOnlyList<ulong>? Holders => ProposedIndex is { } index ? Survivors.Where(id => LastIndexes.TryGetValue(id, out var last) && last >= index).ToList() : null;

    /// <summary>
    /// Whether the removal must apply at <see cref="ProposedIndex"/>: the survivors without it (counting
    /// <paramref name="restarted"/> holders among them) are fewer than a quorum of the voters with the dead leader counted.
    /// </summary>
    public bool MustTakeAtProposedIndex(IReadOnlyCollection<ulong> restarted)
    {
        if (Holders is not { } holders || ElectionBegun)
        {
            return false;
        }

        var voters = Survivors.Count + 1;
        var without = Survivors.Count - holders.Count(id => !restarted.Contains(id));
        return without < (voters / 2) + 1;
    }

    /// <summary>Null when the removal applied at <paramref name="appliedIndexes"/> is legal by the rule above; else the problem.</summary>
    public string? Judge(IReadOnlyCollection<ulong> appliedIndexes, IReadOnlyCollection<ulong> restarted)
    {
        if (appliedIndexes.Count > 1)
        {
            return $"the removal of node {Leaving} applied at different indexes on different survivors: {string.Join(", ", appliedIndexes.Order())}";
        }

        if (appliedIndexes.Count == 1 && MustTakeAtProposedIndex(restarted) && appliedIndexes.Single() != ProposedIndex)
        {
            return string.Create(CultureInfo.InvariantCulture,
                $"the removal of node {Leaving} applied at index {appliedIndexes.Single()}, not at index {ProposedIndex} where node {Leaving} proposed it: survivors [{string.Join(",", Holders!)}] of [{string.Join(",", Survivors)}] held that entry when it died, too few without it were left for a quorum of {Survivors.Count + 1} voters, so every later leader must have held it and committed it there");
        }

        return null;
    }

    public override string ToString()
    {
        var lasts = string.Join(", ", Survivors.Select(id => LastIndexes.TryGetValue(id, out var last) ? $"{id}: {last}" : $"{id}: not asked"));
        return ProposedIndex is not { } index
            ? $"node {Leaving}'s log shows no proposal of its removal; survivors' last indexes {lasts}"
            : $"node {Leaving} proposed its removal at index {index}; survivors' last indexes {lasts}: held by [{string.Join(",", Holders!)}]{(ElectionBegun ? " (an election had begun: not judged)" : "")}";
    }

    /// <summary>The index the leader's log says it proposed the removal of <paramref name="leaving"/> at, the last such line (AdminService's log).</summary>
    public static ulong? ProposedRemovalIndex(string output, ulong leaving) =>
        Indexes(output, $@"Operator membership change proposed: Remove node {leaving} at index (\d+)").LastOrDefault() is var index and not 0 ? index : null;

    /// <summary>The indexes a node's log says the removal of <paramref name="leaving"/> was applied at (the driver's log; again on a replay).</summary>
    public static IEnumerable<ulong> AppliedRemovalIndexes(string output, ulong leaving) =>
        Indexes(output, $@"Membership change at index (\d+) applied: Remove node {leaving}\b");

    private static IEnumerable<ulong> Indexes(string output, string pattern) =>
        Regex.Matches(output, pattern, RegexOptions.CultureInvariant).Select(match => ulong.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture));
}
