using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

/// <summary>Raised inside a run when a check fails; the simulator turns it into a <see cref="SimulationFailure"/>.</summary>
internal sealed class SimulationViolation(FailureKind kind, string message) : Exception(message)
{
    public FailureKind Kind { get; } = kind;
}

/// <summary>What is known about one committed index, from whichever node saw it first.</summary>
internal sealed class CommittedEntry
{
    public bool TermKnown { get; set; }
    public ulong Term { get; set; }
    public bool DataKnown { get; set; }
    public EntryType Type { get; set; }
    public ReadOnlyMemory<byte> Data { get; set; }

    /// <summary>
    /// The term of the node that first saw this index committed, at that moment: an upper bound on the term of the
    /// leader that committed it (the observer's term is at least the committing leader's). Leader completeness is
    /// required of leaders of later terms only.
    /// </summary>
    public ulong CommitTermBound { get; init; }

    /// <summary>When some node's commit index first covered this index (virtual microseconds).</summary>
    public long FirstSeenMicros { get; init; }

    /// <summary>Which node told us the term/data first (for messages).</summary>
    public string Source { get; set; } = "";
}

/// <summary>
/// The Raft safety invariants, checked incrementally after every event:
/// at most one leader per term; log matching (an (index, term) pair names one payload and one predecessor term,
/// checked for every entry that appears in any node's log); leader completeness (a new leader of term T holds every
/// entry committed in a term before T, above its compaction point); state machine safety (no index is committed or
/// applied with two different entries, and snapshots at one index carry identical state); no committed entry lost
/// (no node drops an entry it had committed; the final state holds every committed entry, checked at the end).
/// With protocol checks on, also: a node votes at most once per term, and a leader only commits entries that a
/// quorum of its voters hold durably (persist before acknowledging).
/// </summary>
internal sealed class InvariantChecker(bool protocolChecks)
{
    // Looked up by key only, never iterated: hash order cannot influence the run.
    private readonly Dictionary<ulong, ulong> _leaderOfTerm = [];
    private readonly Dictionary<(ulong Voter, ulong Term), ulong> _voteOf = [];
    private readonly Dictionary<(ulong Index, ulong Term), LoggedEntry> _logged = [];
    private readonly Dictionary<ulong, ReadOnlyMemory<byte>> _snapshotData = [];
    // _committed[i] describes index i; index 0 is a placeholder.
    private readonly List<CommittedEntry> _committed = [new CommittedEntry { TermKnown = true }];

    // The committed membership changes, in index order, as far as every committed payload is known (_membershipKnownTo):
    // (index of the change, membership after it); the first element is the membership before any change.
    private readonly List<(ulong Index, Membership Membership)> _membershipChanges = [(0, Membership.Empty)];
    private ulong _membershipKnownTo;

    public int LeadersElected { get; private set; }

    /// <summary>Times a leader's commit index moved to an entry of an earlier term (only a planted bug does that).</summary>
    public int PreviousTermCommits { get; private set; }

    /// <summary>The highest index any node's commit index has covered.</summary>
    public ulong MaxCommitted => (ulong)_committed.Count - 1;

    public CommittedEntry? Committed(ulong index) => index > 0 && index <= MaxCommitted ? _committed[(int)index] : null;

    /// <summary>
    /// Records a genesis snapshot at <paramref name="index"/> (term = index) as committed: the empty state, no payloads,
    /// and <paramref name="membership"/> in effect as of it.
    /// </summary>
    public void SeedGenesis(ulong index, Membership membership)
    {
        if (_membershipChanges.Count == 1 && _membershipKnownTo == 0)
        {
            _membershipChanges.Add((index, membership));
            _membershipKnownTo = index;
        }

        while (MaxCommitted < index)
        {
            var i = (ulong)_committed.Count;
            _committed.Add(new CommittedEntry { TermKnown = true, Term = i, DataKnown = true, Type = EntryType.Normal, CommitTermBound = 0, Source = "genesis" });
        }
    }

    /// <summary>Checks a running node after an event touched it.</summary>
    public void ObserveNode(SimNode node, long now, Func<ulong, SimNode?> nodeById)
    {
        var raft = node.Raft!;
        var term = raft.Term;
        var role = raft.Role;
        if (term < node.ObservedTerm)
        {
            Fail($"n{node.Id}: term went back from {node.ObservedTerm} to {term}");
        }

        if (role == Role.Leader)
        {
            if (_leaderOfTerm.TryGetValue(term, out var other))
            {
                if (other != node.Id)
                {
                    Fail($"two leaders in term {term}: n{other} and n{node.Id}");
                }
            }
            else
            {
                _leaderOfTerm[term] = node.Id;
                LeadersElected++;
            }
        }

        ObserveLog(node, raft);
        ObserveCommit(node, raft, now, nodeById);

        var becameLeader = role == Role.Leader && (node.ObservedRole != Role.Leader || node.ObservedTerm != term);
        if (becameLeader)
        {
            CheckLeaderCompleteness(node, raft);
        }

        node.ObservedRole = role;
        node.ObservedTerm = term;
    }

    /// <summary>Checks a Ready when the host takes it (before anything in it is carried out).</summary>
    public void ObserveReady(SimNode node, Ready ready)
    {
        var raft = node.Raft!;
        var next = node.Applied + 1;
        if (ready.Snapshot is { } snapshot)
        {
            if (snapshot.Index <= node.Applied)
            {
                Contract($"n{node.Id}: Ready carries snapshot {snapshot.Index}/{snapshot.Term} at or below the applied index {node.Applied}");
            }

            if (snapshot.Index > raft.CommitIndex)
            {
                Contract($"n{node.Id}: snapshot {snapshot.Index} beyond its commit index {raft.CommitIndex}");
            }

            RecordCommitted(snapshot.Index, snapshot.Term, null, $"n{node.Id} snapshot");
            ObserveSnapshotMetadata(snapshot, $"n{node.Id} install");
            next = snapshot.Index + 1;
        }

        foreach (var entry in ready.CommittedEntries)
        {
            if (entry.Index != next)
            {
                Contract($"n{node.Id}: committed entries not contiguous with applied: expected index {next}, got {entry}");
            }

            if (entry.Index > raft.CommitIndex)
            {
                Contract($"n{node.Id}: hands out {entry} to apply beyond its commit index {raft.CommitIndex}");
            }

            // A leader's entries count as committed once durable there too (see ObserveCommit): this Ready makes them.
            if (!(entry.Index > MaxCommitted && raft.Role == Role.Leader))
            {
                RecordCommitted(entry.Index, entry.Term, entry, $"n{node.Id} apply");
            }

            next++;
        }

        for (var i = 1; i < ready.Entries.Count; i++)
        {
            if (ready.Entries[i].Index != ready.Entries[i - 1].Index + 1)
            {
                Contract($"n{node.Id}: Ready entries not contiguous: {ready.Entries[i - 1]} then {ready.Entries[i]}");
            }
        }
    }

    /// <summary>Checks a message as it is sent (after its Ready was made durable, or for a leader's early appends, when the Ready was taken).</summary>
    public void ObserveSend(SimNode node, Message message)
    {
        if (message.From != node.Id)
        {
            Contract($"n{node.Id} sends a message from n{message.From}: {message}");
        }

        if (message.Type is not (MessageType.PreVote or MessageType.PreVoteResponse))
        {
            node.MaxSentTerm = Math.Max(node.MaxSentTerm, message.Term);
        }

        if (protocolChecks && message.Type == MessageType.VoteResponse && !message.Reject)
        {
            if (_voteOf.TryGetValue((node.Id, message.Term), out var earlier) && earlier != message.To)
            {
                Fail($"n{node.Id} voted twice in term {message.Term}: for n{earlier} and for n{message.To}");
            }

            _voteOf[(node.Id, message.Term)] = message.To;
        }
    }

    /// <summary>Snapshots of the same index must carry the same state, whichever node took them.</summary>
    public void ObserveSnapshotData(ulong index, ReadOnlyMemory<byte> data, string source)
    {
        if (_snapshotData.TryGetValue(index, out var earlier))
        {
            if (!earlier.Span.SequenceEqual(data.Span))
            {
                Fail($"state machine safety: snapshot data at index {index} from {source} differs from an earlier snapshot at that index " +
                     $"({KvStateMachine.Deserialize(earlier)} vs {KvStateMachine.Deserialize(data)})");
            }
        }
        else
        {
            _snapshotData[index] = data;
        }
    }

    /// <summary>
    /// Membership safety: the configuration a snapshot carries is the one in effect at its index, i.e. the committed
    /// membership changes up to it applied in order (a snapshot labelled with a later one would hand its receivers,
    /// and its own node after a restart, changes before their entries).
    /// </summary>
    public void ObserveSnapshotMetadata(SnapshotMetadata snapshot, string source)
    {
        if (ReferenceMembership(snapshot.Index) is { } expected && !expected.Equals(snapshot.Membership))
        {
            Fail($"membership: snapshot {snapshot.Index}/{snapshot.Term} from {source} carries {snapshot.Membership}, but the committed changes up to it make {expected}");
        }
    }

    /// <summary>
    /// Membership safety when a node starts and after it applied a Ready: its configuration is the one as of its applied index, or, right
    /// after a restart, as of the commit index it found on disk (the core applies the committed changes found at start)
    /// until the replay passes it. Not checked while a snapshot it accepted is not yet applied (its configuration is
    /// the snapshot's then).
    /// </summary>
    public void ObserveAppliedMembership(SimNode node)
    {
        var raft = node.Raft!;
        if (raft.FirstLogIndex > node.Applied + 1)
        {
            return;
        }

        var asOf = Math.Max(node.Applied, node.MembershipFloor);
        if (ReferenceMembership(asOf) is { } expected && !expected.Equals(raft.Membership))
        {
            Fail($"membership: n{node.Id} (applied {node.Applied}, commit at start {node.MembershipFloor}) is at {raft.Membership}, " +
                 $"but the committed changes up to {asOf} make {expected}");
        }
    }

    /// <summary>
    /// The membership the committed changes up to <paramref name="index"/> make (from the genesis snapshot's, if any),
    /// or null while some committed payload up to there is unknown.
    /// </summary>
    public Membership? ReferenceMembership(ulong index)
    {
        while (_membershipKnownTo < index && _membershipKnownTo < MaxCommitted)
        {
            var next = _committed[(int)(_membershipKnownTo + 1)];
            if (!next.DataKnown)
            {
                break;
            }

            _membershipKnownTo++;
            if (next.Type == EntryType.ConfChange)
            {
                _membershipChanges.Add((_membershipKnownTo, _membershipChanges[^1].Membership.Apply(ConfChange.Decode(next.Data.Span))));
            }
        }

        if (index > _membershipKnownTo)
        {
            return null;
        }

        // The last change at or before index (the list is short and sorted by index).
        var lo = 0;
        var hi = _membershipChanges.Count - 1;
        while (lo < hi)
        {
            var mid = (lo + hi + 1) / 2;
            if (_membershipChanges[mid].Index <= index)
            {
                lo = mid;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return _membershipChanges[lo].Membership;
    }

    /// <summary>The state obtained by applying every committed entry up to <paramref name="index"/>, or null if some payload is unknown.</summary>
    public KvStateMachine? ReferenceState(ulong index)
    {
        var machine = new KvStateMachine();
        for (var i = 1UL; i <= Math.Min(index, MaxCommitted); i++)
        {
            var entry = _committed[(int)i];
            if (!entry.DataKnown)
            {
                return null;
            }

            if (entry.Type == EntryType.Normal)
            {
                machine.ApplyEntryData(entry.Data.Span);
            }
        }

        return machine;
    }

    private void ObserveLog(SimNode node, RaftNode raft)
    {
        var first = raft.FirstLogIndex;
        var last = raft.LastIndex;
        var terms = node.LogTerms;

        // Forget what was compacted away; restart the shadow if the log moved in a way compaction cannot explain.
        if (node.LogTermsFirst < first)
        {
            var drop = (int)Math.Min((ulong)terms.Count, first - node.LogTermsFirst);
            terms.RemoveRange(0, drop);
            node.LogTermsFirst = first;
        }
        else if (node.LogTermsFirst > first && terms.Count > 0)
        {
            Fail($"n{node.Id}: first log index went back from {node.LogTermsFirst} to {first}");
        }
        else if (terms.Count == 0)
        {
            node.LogTermsFirst = first;
        }

        // Find the last index where the log still agrees with what was observed before (usually the last index).
        var shadowLast = node.LogTermsFirst + (ulong)terms.Count - 1;
        var agreed = Math.Min(last, shadowLast);
        while (agreed >= node.LogTermsFirst)
        {
            if (raft.TryGetLogTerm(agreed, out var term) && term == terms[(int)(agreed - node.LogTermsFirst)])
            {
                break;
            }

            agreed--;
        }

        if (shadowLast > agreed)
        {
            // Entries after `agreed` were replaced or removed. A node must never lose an entry it had committed.
            if (agreed + 1 <= node.ObservedCommit)
            {
                Fail($"n{node.Id}: replaced or dropped its entry at index {agreed + 1} (term {terms[(int)(agreed + 1 - node.LogTermsFirst)]}) " +
                     $"although it had committed up to {node.ObservedCommit}");
            }

            var keep = (int)(agreed + 1 - node.LogTermsFirst);
            terms.RemoveRange(keep, terms.Count - keep);
        }

        if (last <= agreed)
        {
            return;
        }

        var entries = raft.GetLogEntries(agreed + 1, last);
        if ((ulong)entries.Count != last - agreed)
        {
            Contract($"n{node.Id}: GetLogEntries({agreed + 1}, {last}) returned {entries.Count} entries");
        }

        var previousKnown = raft.TryGetLogTerm(agreed, out var previousTerm);
        foreach (var entry in entries)
        {
            if (previousKnown && entry.Term < previousTerm)
            {
                Fail($"n{node.Id}: log terms decrease at {entry} after term {previousTerm}");
            }

            RecordLogged(node, entry, previousKnown, previousTerm);
            terms.Add(entry.Term);
            previousKnown = true;
            previousTerm = entry.Term;
        }
    }

    private void RecordLogged(SimNode node, Entry entry, bool previousKnown, ulong previousTerm)
    {
        var key = (entry.Index, entry.Term);
        if (!_logged.TryGetValue(key, out var known))
        {
            _logged[key] = new LoggedEntry(entry.Type, entry.Data, previousKnown, previousTerm, node.Id);
            return;
        }

        if (known.Type != entry.Type || !known.Data.Span.SequenceEqual(entry.Data.Span))
        {
            Fail($"log matching: n{node.Id} holds {entry} with a payload different from the {entry.Index}/{entry.Term} first seen on n{known.FirstNode}");
        }

        if (known.FirstNode != node.Id && !known.SeenElsewhere)
        {
            known = known with { SeenElsewhere = true };
            _logged[key] = known;
        }

        if (previousKnown)
        {
            if (!known.PreviousKnown)
            {
                _logged[key] = known with { PreviousKnown = true, PreviousTerm = previousTerm };
            }
            else if (known.PreviousTerm != previousTerm)
            {
                Fail($"log matching: on n{node.Id} entry {entry.Index}/{entry.Term} follows term {previousTerm}, on n{known.FirstNode} it follows term {known.PreviousTerm}");
            }
        }
    }

    /// <summary>
    /// A node restarts from <paramref name="durable"/>: the entries it held only in memory are gone as if never made. A
    /// sole voter's term and vote are its own to lose too, so after such a crash it may win the same term again and make
    /// other entries at the same indexes, which is no breach of log matching as long as the lost ones never left it
    /// (a host sends only what is durable). Entries first seen on it, never on another node, and not on its disk are
    /// forgotten.
    /// </summary>
    public void ForgetLostEntries(SimNode node, IRaftLogReader durable)
    {
        foreach (var (key, entry) in _logged.ToList())
        {
            if (entry.FirstNode == node.Id && !entry.SeenElsewhere
                && !(durable.TryGetTerm(key.Index, out var term) == LogReadStatus.Ok && term == key.Term))
            {
                _logged.Remove(key);
            }
        }
    }

    /// <summary>After a node's Ready was made durable (before anything in it is applied): what that committed.</summary>
    public void ObserveDurable(SimNode node, long now, Func<ulong, SimNode?> nodeById) => ObserveCommit(node, node.Raft!, now, nodeById);

    private static bool IsSingleVoterLeader(SimNode node, RaftNode raft) =>
        raft.Role == Role.Leader && raft.Membership.Voters.Count == 1 && raft.Membership.IsVoter(node.Id);

    private void ObserveCommit(SimNode node, RaftNode raft, long now, Func<ulong, SimNode?> nodeById)
    {
        var commit = raft.CommitIndex;
        if (raft.Role == Role.Leader)
        {
            // A single voter's commit index covers what it appended before that is durable (nothing of it is sent or
            // applied before it is, and a crash loses it with the commit index): committed is what is durable of it.
            // (Any other leader commits only what a follower acknowledged, which it sent after making it durable; its own
            // entries may not be durable yet, since it sends them before its write ends: only what is durable counts.)
            if (IsSingleVoterLeader(node, raft))
            {
                node.SingleVoterCommitUpTo = Math.Max(node.SingleVoterCommitUpTo, commit);
            }

            var durable = Math.Min(commit, node.Durable.LastIndex);
            while (durable > node.ObservedCommit && durable >= node.Durable.FirstIndex &&
                   (node.Durable.TryGetTerm(durable, out var durableTerm) != LogReadStatus.Ok || !raft.TryGetLogTerm(durable, out var term) || durableTerm != term))
            {
                durable--;
            }

            commit = Math.Max(node.ObservedCommit, durable);
        }
        if (commit < node.ObservedCommit)
        {
            Fail($"n{node.Id}: commit index went back from {node.ObservedCommit} to {commit}");
        }

        if (commit == node.ObservedCommit)
        {
            return;
        }

        if (commit > raft.LastIndex)
        {
            Fail($"n{node.Id}: commit index {commit} beyond its last index {raft.LastIndex}");
        }

        var low = node.ObservedCommit + 1;
        var first = raft.FirstLogIndex;
        var from = Math.Max(low, first);
        var entries = from <= commit ? raft.GetLogEntries(from, commit) : [];
        if (from <= commit && (ulong)entries.Count != commit - from + 1)
        {
            Contract($"n{node.Id}: GetLogEntries({from}, {commit}) returned {entries.Count} entries");
        }

        for (var i = low; i <= commit; i++)
        {
            while (MaxCommitted < i)
            {
                _committed.Add(new CommittedEntry { CommitTermBound = raft.Term, FirstSeenMicros = now });
            }

            if (i >= from)
            {
                var entry = entries[(int)(i - from)];
                RecordCommitted(i, entry.Term, entry, $"n{node.Id} commit");
            }
            else if (i + 1 == first && raft.TryGetLogTerm(i, out var term))
            {
                RecordCommitted(i, term, null, $"n{node.Id} commit");
            }
        }

        // (The commit index itself, not the durable part of it observed above.)
        if (raft.Role == Role.Leader && raft.TryGetLogTerm(raft.CommitIndex, out var commitTerm) && commitTerm != raft.Term)
        {
            // Raft's commit rule: a leader only advances its commit index by counting replicas of entries of its own term.
            PreviousTermCommits++;
            if (protocolChecks)
            {
                Fail($"n{node.Id} (leader, term {raft.Term}) advanced its commit index to {raft.CommitIndex}, an entry of term {commitTerm}: only current-term entries commit by counting");
            }
        }

        if (protocolChecks && raft.Role == Role.Leader)
        {
            // What a single voter committed is on the quorum of its configuration (itself) once durable there, even if
            // a configuration with more voters took effect meanwhile.
            CheckDurableQuorum(node, raft, Math.Max(low, node.SingleVoterCommitUpTo + 1), commit, nodeById);
        }

        node.ObservedCommit = commit;
    }

    private void RecordCommitted(ulong index, ulong term, Entry? entry, string source)
    {
        if (index == 0)
        {
            return;
        }

        if (index > MaxCommitted)
        {
            Fail($"{source}: index {index} treated as committed beyond any commit index observed ({MaxCommitted})");
        }

        var known = _committed[(int)index];
        if (known.TermKnown && known.Term != term)
        {
            Fail($"state machine safety: index {index} committed with term {known.Term} ({known.Source}) and with term {term} ({source})");
        }

        if (!known.TermKnown)
        {
            known.TermKnown = true;
            known.Term = term;
            known.Source = source;
        }

        if (entry is not { } e)
        {
            return;
        }

        if (known.DataKnown)
        {
            if (known.Type != e.Type || !known.Data.Span.SequenceEqual(e.Data.Span))
            {
                Fail($"state machine safety: index {index} committed with two different payloads ({known.Source} and {source})");
            }
        }
        else
        {
            known.DataKnown = true;
            known.Type = e.Type;
            known.Data = e.Data;
        }
    }

    private void CheckLeaderCompleteness(SimNode node, RaftNode raft)
    {
        var term = raft.Term;
        for (var i = Math.Max(raft.FirstLogIndex, 1); i <= MaxCommitted; i++)
        {
            var committed = _committed[(int)i];
            if (!committed.TermKnown || committed.CommitTermBound >= term)
            {
                continue;
            }

            if (!raft.TryGetLogTerm(i, out var held) || held != committed.Term)
            {
                Fail($"leader completeness: n{node.Id} became leader of term {term} without committed entry {i}/{committed.Term} " +
                     $"(committed by term {committed.CommitTermBound} at the latest; the leader holds {(raft.TryGetLogTerm(i, out var t) ? "term " + t : "nothing")} there, last index {raft.LastIndex})");
            }
        }
    }

    private void CheckDurableQuorum(SimNode leader, RaftNode raft, ulong low, ulong high, Func<ulong, SimNode?> nodeById)
    {
        var voters = raft.Membership.Voters;
        for (var i = low; i <= high; i++)
        {
            var committed = _committed[(int)i];
            if (!committed.TermKnown)
            {
                continue;
            }

            var durable = 0;
            foreach (var voter in voters)
            {
                var disk = nodeById(voter)?.Durable;
                if (disk is not null &&
                    (disk.Snapshot.Index >= i || (disk.TryGetTerm(i, out var term) == LogReadStatus.Ok && term == committed.Term)))
                {
                    durable++;
                }
            }

            if (durable < voters.Count / 2 + 1)
            {
                Fail($"n{leader.Id} (leader, term {raft.Term}) committed {i}/{committed.Term} while only {durable} of voters [{string.Join(",", voters)}] hold it durably");
            }
        }
    }

    private static void Fail(string message) => throw new SimulationViolation(FailureKind.Invariant, message);

    private static void Contract(string message) => throw new SimulationViolation(FailureKind.Exception, "Ready/API contract: " + message);

    /// <param name="SeenElsewhere">Another node has held it too (so it left its first node, which sends only what is durable).</param>
    private readonly record struct LoggedEntry(EntryType Type, ReadOnlyMemory<byte> Data, bool PreviousKnown, ulong PreviousTerm, ulong FirstNode, bool SeenElsewhere = false);
}
