namespace Dcache.Raft;

/// <summary>Where a leader stands with one follower (reported by <see cref="RaftNode.GetStatus"/>).</summary>
public enum ReplicationState : byte
{
    /// <summary>Unsure where the follower's log ends: one Append at a time until it answers.</summary>
    Probe = 1,
    /// <summary>Follower keeps up: Appends are pipelined up to the in-flight caps.</summary>
    Replicate,
    /// <summary>The entries it needs are compacted: a snapshot is on its way.</summary>
    Snapshot,
}

public readonly record struct PeerProgress(ulong Id, ulong Match, ulong Next, ReplicationState State, bool IsLearner, bool RecentActive, int TicksSinceHeard = 0, bool HeardThisTerm = false);

public sealed record RaftStatus(
    ulong Id,
    ulong Term,
    ulong Vote,
    Role Role,
    ulong Leader,
    ulong Commit,
    ulong Applied,
    ulong LastIndex,
    Membership Membership,
    IReadOnlyList<PeerProgress> Progress);

/// <summary>
/// One Raft node, driven from outside and deterministic: the host calls <see cref="Tick"/> on a timer,
/// <see cref="Step"/> for each message from a peer, and the request methods; then takes <see cref="GetReady"/>,
/// carries it out in the order written on <see cref="Ready"/>, and calls <see cref="Advance"/>.
/// Not thread-safe: one loop owns it.
/// </summary>
public sealed partial class RaftNode
{
    private readonly RaftOptions _options;
    private readonly IRandomSource _random;
    private readonly RaftLog _log;
    private readonly SortedDictionary<ulong, Progress> _progress = [];
    private readonly SortedDictionary<ulong, bool> _votes = [];
    private List<Message> _messages = [];

    private ulong _term;
    private ulong _vote;
    private Role _role;
    private ulong _leader;
    private Membership _membership;
    private ulong _confAppliedIndex;
    private ulong _pendingConfIndex;
    private ulong _leadTransferee;
    private ulong _uncommittedBytes;

    // A TimeoutNow that arrived while a committed membership change was still unapplied: the election it asks for
    // starts once the change is applied, unless this many ticks pass first (the leader abandons a transfer after an
    // election timeout) or the term moves on. 0: none pending.
    private int _deferredTransferTicks;

    private int _electionElapsed;
    private int _heartbeatElapsed;
    private int _randomizedElectionTimeout;

    private SoftState _lastSoftState;
    private HardState _lastHardState;
    private Ready? _readyInProgress;
    private bool _deferEntriesOnce;
    private bool _broadcastPending;

    public RaftNode(RaftOptions options, IRaftLogReader storage, IRandomSource random)
    {
        options.Validate();
        _options = options;
        _random = random;

        var (hardState, snapshot) = storage.InitialState();
        if (hardState.Commit > storage.LastIndex)
        {
            throw new InvalidOperationException(
                $"node {options.Id}: stored commit index {hardState.Commit} is beyond the last stored entry {storage.LastIndex}: the log lost committed entries");
        }

        var committed = Math.Max(hardState.Commit, snapshot.Index);
        _log = new RaftLog(storage, committed, Math.Max(options.Applied, snapshot.Index));
        _membership = snapshot.Membership;
        _confAppliedIndex = snapshot.Index;
        ApplyCommittedConfChangesAtStart();

        _term = hardState.Term;
        _vote = hardState.Vote;
        _lastHardState = hardState;
        BecomeFollower(_term, 0);
        _lastSoftState = new SoftState(0, Role.Follower);
    }

    public ulong Id => _options.Id;

    public ulong Term => _term;

    public Role Role => _role;

    public ulong Leader => _leader;

    public ulong CommitIndex => _log.Committed;

    public ulong AppliedIndex => _log.Applied;

    public ulong LastIndex => _log.LastIndex;

    /// <summary>
    /// The membership as of the applied index, except after a restart: the core applies the committed changes it finds
    /// at start, so until the applied index reaches the commit index found then, the membership is as of that index.
    /// A host that labels a snapshot with it must not snapshot before then.
    /// </summary>
    public Membership Membership => _membership;

    private HardState CurrentHardState => new(_term, _vote, _log.Committed);

    private bool Promotable => _membership.IsVoter(Id);

    private int Quorum => _membership.QuorumSize;

    /// <summary>Advances logical time by one tick: elections on followers, heartbeats and CheckQuorum on leaders.</summary>
    public void Tick()
    {
        if (_role == Role.Leader)
        {
            TickLeader();
        }
        else
        {
            TickElection();
        }
    }

    private void TickElection()
    {
        _electionElapsed++;
        if (_deferredTransferTicks > 0)
        {
            _deferredTransferTicks--;
        }

        if (Promotable && _electionElapsed >= _randomizedElectionTimeout)
        {
            _electionElapsed = 0;
            StartElection(transfer: false);
        }
    }

    private void TickLeader()
    {
        _heartbeatElapsed++;
        _electionElapsed++;
        foreach (var pr in _progress.Values)
        {
            if (pr.Id != Id)
            {
                pr.TickUnheard();
            }
        }

        if (_electionElapsed >= _options.ElectionTicks)
        {
            _electionElapsed = 0;
            if (!_membership.IsVoter(Id))
            {
                // A removed leader whose successor did not catch up within an election timeout (see ApplyConfChange).
                // With two voters or more left, they can elect without us. A single voter left cannot until it learns
                // that our removal committed (it still counts us, and our log may be longer than its own): keep
                // handing over to it, however long it takes to reach it.
                if (_membership.Voters.Count > 1)
                {
                    BecomeFollower(_term, 0);
                    return;
                }
            }
            else
            {
                if (_options.CheckQuorum && !QuorumRecentlyActive())
                {
                    BecomeFollower(_term, 0);
                    return;
                }

                if (_leadTransferee != 0)
                {
                    _leadTransferee = 0; // the target did not take over within an election timeout
                }
            }
        }

        if (_heartbeatElapsed >= _options.HeartbeatTicks || ReadRoundUnconfirmed)
        {
            // A read round still unconfirmed by now was sent to a voter that has not answered: ask every follower.
            _heartbeatElapsed = 0;
            BroadcastHeartbeat();
        }
    }

    private bool QuorumRecentlyActive()
    {
        var active = 0;
        foreach (var (id, pr) in _progress)
        {
            if (!pr.IsLearner && (id == Id || pr.RecentActive))
            {
                active++;
            }

            if (id != Id)
            {
                pr.RecentActive = false;
            }
        }

        return active >= Quorum;
    }

    /// <summary>Starts an election now (for bootstrapping a fresh cluster quickly, and tests).</summary>
    public void Campaign()
    {
        if (_role != Role.Leader)
        {
            StartElection(transfer: false);
        }
    }

    private void StartElection(bool transfer)
    {
        if (!Promotable || HasUnappliedConfChange())
        {
            // A node must not campaign under a configuration that is about to change.
            return;
        }

        if (_options.PreVote && !transfer)
        {
            Campaign(preVote: true, transfer: false);
        }
        else
        {
            Campaign(preVote: false, transfer: transfer);
        }
    }

    /// <summary>A committed membership change not yet in effect (changes found committed at start are in effect already).</summary>
    private bool HasUnappliedConfChange()
    {
        var inEffect = Math.Max(_log.Applied, _confAppliedIndex);
        if (_log.Committed <= inEffect)
        {
            return false;
        }

        var entries = new List<Entry>();
        _log.Slice(Math.Max(inEffect + 1, _log.FirstIndex), _log.Committed + 1, ulong.MaxValue, entries);
        return entries.Exists(e => e.Type == EntryType.ConfChange);
    }

    private void Campaign(bool preVote, bool transfer)
    {
        ulong electionTerm;
        MessageType requestType;
        if (preVote)
        {
            BecomePreCandidate();
            requestType = MessageType.PreVote;
            electionTerm = _term + 1; // asked about, not adopted
        }
        else
        {
            BecomeCandidate();
            requestType = MessageType.Vote;
            electionTerm = _term;
        }

        if (RecordVote(Id, granted: true) == ElectionResult.Won)
        {
            // Single-voter configuration: nobody else to ask.
            if (preVote)
            {
                Campaign(preVote: false, transfer: transfer);
            }
            else
            {
                BecomeLeader();
            }

            return;
        }

        foreach (var voter in _membership.Voters)
        {
            if (voter == Id)
            {
                continue;
            }

            Send(new Message
            {
                Type = requestType,
                From = Id,
                To = voter,
                Term = electionTerm,
                Index = _log.LastIndex,
                LogTerm = _log.LastTerm,
                LeadershipTransfer = transfer,
            });
        }
    }

    private enum ElectionResult
    {
        Pending,
        Won,
        Lost,
    }

    private ElectionResult RecordVote(ulong voter, bool granted)
    {
        _votes.TryAdd(voter, granted);
        var grantedCount = 0;
        var rejectedCount = 0;
        foreach (var (id, g) in _votes)
        {
            if (!_membership.IsVoter(id))
            {
                continue;
            }

            if (g)
            {
                grantedCount++;
            }
            else
            {
                rejectedCount++;
            }
        }

        if (grantedCount >= Quorum)
        {
            return ElectionResult.Won;
        }

        return rejectedCount > _membership.Voters.Count - Quorum ? ElectionResult.Lost : ElectionResult.Pending;
    }

    private void Reset(ulong term)
    {
        // Before the term moves: rejections to forwarding followers carry the term the requests were made in.
        DropPendingReads();
        if (_term != term)
        {
            _term = term;
            _vote = 0;
        }

        _leader = 0;
        _electionElapsed = 0;
        _heartbeatElapsed = 0;
        _randomizedElectionTimeout = _options.ElectionTicks + _random.Next(_options.ElectionTicks);
        _leadTransferee = 0;
        _deferredTransferTicks = 0;
        _broadcastPending = false;
        _votes.Clear();
        _pendingConfIndex = 0;
        _uncommittedBytes = 0;
        RebuildProgress(resetAll: true);
    }

    private void RebuildProgress(bool resetAll)
    {
        if (resetAll)
        {
            _progress.Clear();
        }

        foreach (var id in _membership.All)
        {
            if (_progress.TryGetValue(id, out var existing))
            {
                existing.IsLearner = _membership.IsLearner(id);
                continue;
            }

            var pr = new Progress(id, _log.LastIndex + 1, _options.MaxInflightMessages, _options.MaxInflightBytes, _membership.IsLearner(id))
            {
                // A new member counts as active until the next CheckQuorum round so that adding it cannot depose the leader at once.
                RecentActive = true,
            };
            if (id == Id)
            {
                pr.Match = _log.LastIndex;
            }

            _progress[id] = pr;
        }

        foreach (var id in _progress.Keys.Where(id => !_membership.Contains(id)).ToList())
        {
            _progress.Remove(id);
        }
    }

    private void BecomeFollower(ulong term, ulong leader)
    {
        Reset(term);
        _role = Role.Follower;
        _leader = leader;
    }

    private void BecomePreCandidate()
    {
        if (_role == Role.Leader)
        {
            throw new InvalidOperationException("a leader cannot become a pre-candidate");
        }

        // Term and vote stay: a pre-vote changes nothing durable.
        DropPendingReads();
        _votes.Clear();
        _role = Role.PreCandidate;
        _leader = 0;
    }

    private void BecomeCandidate()
    {
        if (_role == Role.Leader)
        {
            throw new InvalidOperationException("a leader cannot become a candidate");
        }

        Reset(_term + 1);
        _vote = Id;
        _role = Role.Candidate;
    }

    private void BecomeLeader()
    {
        if (_role == Role.Follower)
        {
            throw new InvalidOperationException("a follower cannot become leader without an election");
        }

        Reset(_term);
        _leader = Id;
        _role = Role.Leader;
        foreach (var pr in _progress.Values)
        {
            pr.RecentActive = true;
        }

        _progress[Id].BecomeReplicate();

        // The no-op opens the term: entries of earlier terms commit only once an entry of this term does, and no
        // membership change may be proposed before it is applied.
        AppendEntry(new Entry(0, 0, EntryType.Normal, ReadOnlyMemory<byte>.Empty));
        _pendingConfIndex = _log.LastIndex;
        BroadcastAppend();
    }

    /// <summary>Feeds a message from a peer. Messages addressed to another node are ignored.</summary>
    public void Step(Message message)
    {
        if (message.To != Id)
        {
            return;
        }

        if (message.Term > _term)
        {
            if (message.Type is MessageType.Vote or MessageType.PreVote)
            {
                var inLease = _options.CheckQuorum && _leader != 0 && _electionElapsed < _options.ElectionTicks;
                if (!message.LeadershipTransfer && inLease)
                {
                    // Leader stickiness: we heard from a live leader within the election timeout.
                    return;
                }
            }

            if (message.Type == MessageType.PreVote)
            {
                // Answering a pre-vote changes nothing: the term is only hypothetical.
            }
            else if (message.Type == MessageType.PreVoteResponse && !message.Reject)
            {
                // A granted pre-vote carries the term we would run in; we adopt it only when we campaign.
            }
            else if (message.Type is MessageType.Append or MessageType.Heartbeat or MessageType.Snapshot)
            {
                BecomeFollower(message.Term, message.From);
            }
            else if (message.Type == MessageType.Vote && _role != Role.Leader
                     && !_log.IsUpToDate(message.Index, message.LogTerm))
            {
                // A candidate we will refuse (our log is ahead) takes our term but not our election timer: if the
                // timer restarted, every failed campaign of a behind node would put off ours, and ours is one that
                // can win (thesis 3.4: only granting a vote or hearing a leader restarts it).
                var elapsed = _electionElapsed;
                var timeout = _randomizedElectionTimeout;
                BecomeFollower(message.Term, 0);
                _electionElapsed = elapsed;
                _randomizedElectionTimeout = timeout;
            }
            else
            {
                BecomeFollower(message.Term, 0);
            }
        }
        else if (message.Term < _term)
        {
            if ((_options.CheckQuorum || _options.PreVote) && message.Type is MessageType.Heartbeat or MessageType.Append)
            {
                // A stale leader: tell it our term so it steps down (otherwise, with PreVote or CheckQuorum, nobody
                // whose term it would see may ever contact it again).
                Send(new Message { Type = MessageType.AppendResponse, From = Id, To = message.From, Term = _term });
            }
            else if (message.Type == MessageType.PreVote)
            {
                Send(new Message
                {
                    Type = MessageType.PreVoteResponse,
                    From = Id,
                    To = message.From,
                    Term = _term,
                    Reject = true,
                    Commit = _log.Committed,
                    LogTerm = _log.TermOrZero(_log.Committed),
                });
            }

            return;
        }

        if (message.Type is MessageType.Vote or MessageType.PreVote)
        {
            HandleVoteRequest(message);
            return;
        }

        if (message is { Type: MessageType.VoteResponse or MessageType.PreVoteResponse, Reject: true } && message.LogTerm > 0 && _role != Role.Leader)
        {
            LearnCommitFromRejection(message);
        }

        switch (_role)
        {
            case Role.Leader:
                StepLeader(message);
                break;
            case Role.Candidate:
            case Role.PreCandidate:
                StepCandidate(message);
                break;
            default:
                StepFollower(message);
                break;
        }
    }

    private void HandleVoteRequest(Message message)
    {
        var canVote = _vote == message.From
            || (_vote == 0 && _leader == 0)
            || (message.Type == MessageType.PreVote && message.Term > _term);
        if (_options.Mutation.HasFlag(SafetyMutation.VoteTwiceInTerm) && message.Type == MessageType.Vote)
        {
            canVote = true;
        }

        var responseType = message.Type == MessageType.Vote ? MessageType.VoteResponse : MessageType.PreVoteResponse;
        if (canVote && _log.IsUpToDate(message.Index, message.LogTerm))
        {
            // The response carries the request's term: for a pre-vote our own term may be lower.
            Send(new Message { Type = responseType, From = Id, To = message.From, Term = message.Term });
            if (message.Type == MessageType.Vote)
            {
                _electionElapsed = 0;
                _vote = message.From;
            }
        }
        else
        {
            // The rejection carries our commit index and the term there (see LearnCommitFromRejection).
            Send(new Message
            {
                Type = responseType,
                From = Id,
                To = message.From,
                Term = _term,
                Reject = true,
                Commit = _log.Committed,
                LogTerm = _log.TermOrZero(_log.Committed),
            });
        }
    }

    /// <summary>
    /// A voter that rejected our vote request told us its commit index and the term of its entry there. Where our log
    /// holds that entry, our logs agree up to it (log matching) and everything up to it is committed. This is how the
    /// last voter left by the removal of the other of two learns that the removal committed when the removed node,
    /// whose longer log makes it refuse its vote, cannot tell it otherwise (it no longer leads, e.g. after a crash):
    /// under the old configuration that voter could never win. (A leader, which may get a late rejection, commits only by
    /// counting.)
    /// </summary>
    private void LearnCommitFromRejection(Message message)
    {
        if (message.Commit > _log.Committed && _log.MatchTerm(message.Commit, message.LogTerm))
        {
            _log.CommitTo(message.Commit);
        }
    }

    private void StepCandidate(Message message)
    {
        switch (message.Type)
        {
            case MessageType.Append:
                BecomeFollower(message.Term, message.From);
                HandleAppend(message);
                break;
            case MessageType.Heartbeat:
                BecomeFollower(message.Term, message.From);
                HandleHeartbeat(message);
                break;
            case MessageType.Snapshot:
                BecomeFollower(message.Term, message.From);
                HandleSnapshot(message);
                break;
            case MessageType.VoteResponse when _role == Role.Candidate:
            case MessageType.PreVoteResponse when _role == Role.PreCandidate:
                switch (RecordVote(message.From, !message.Reject))
                {
                    case ElectionResult.Won when _role == Role.PreCandidate:
                        Campaign(preVote: false, transfer: false);
                        break;
                    case ElectionResult.Won:
                        BecomeLeader();
                        break;
                    case ElectionResult.Lost:
                        BecomeFollower(_term, 0);
                        break;
                }

                break;
            case MessageType.ReadIndexResponse:
                HandleReadIndexResponse(message);
                break;
        }
    }

    private void StepFollower(Message message)
    {
        switch (message.Type)
        {
            case MessageType.Append:
                _electionElapsed = 0;
                _leader = message.From;
                HandleAppend(message);
                break;
            case MessageType.Heartbeat:
                _electionElapsed = 0;
                _leader = message.From;
                HandleHeartbeat(message);
                break;
            case MessageType.Snapshot:
                _electionElapsed = 0;
                _leader = message.From;
                HandleSnapshot(message);
                break;
            case MessageType.TimeoutNow:
                // The leader hands over: campaign at once, past pre-vote and leader stickiness. It carries the leader's
                // last entry and commit index: where our log holds that entry, the leader's log and ours agree up to
                // it (log matching), so its commit index holds for us too, as in an Append.
                if (message.Index > 0 && _log.MatchTerm(message.Index, message.LogTerm))
                {
                    _log.CommitTo(Math.Min(message.Commit, message.Index));
                }

                // A leader that removed itself sends this with the commit that removes it, and a leader may hand over to
                // a learner it has just promoted: this node may not campaign before it has applied the change (a learner
                // whose promotion is committed is not a voter until then), and campaigns once it has, if it is a voter
                // (see Advance).
                if (HasUnappliedConfChange())
                {
                    _deferredTransferTicks = _options.ElectionTicks;
                }
                else
                {
                    StartElection(transfer: true);
                }

                break;
            case MessageType.ReadIndexResponse:
                HandleReadIndexResponse(message);
                break;
        }
    }

    private void HandleAppend(Message message)
    {
        if (message.Index < _log.Committed)
        {
            Send(new Message { Type = MessageType.AppendResponse, From = Id, To = message.From, Term = _term, Index = _log.Committed });
            return;
        }

        if (_log.TryAppend(message.Index, message.LogTerm, message.Commit, message.Entries, out var lastNewIndex, out var appended))
        {
            if (appended && _options.Mutation.HasFlag(SafetyMutation.AckBeforePersist))
            {
                _deferEntriesOnce = true;
            }

            Send(new Message { Type = MessageType.AppendResponse, From = Id, To = message.From, Term = _term, Index = lastNewIndex });
            return;
        }

        // Fast backtracking: point the leader at the last index where our logs can still agree, by term.
        var hintIndex = Math.Min(message.Index, _log.LastIndex);
        hintIndex = _log.FindConflictByTerm(hintIndex, message.LogTerm);
        Send(new Message
        {
            Type = MessageType.AppendResponse,
            From = Id,
            To = message.From,
            Term = _term,
            Index = message.Index,
            Reject = true,
            RejectHint = hintIndex,
            LogTerm = _log.TermOrZero(hintIndex),
        });
    }

    private void HandleHeartbeat(Message message)
    {
        _log.CommitTo(message.Commit);
        Send(new Message { Type = MessageType.HeartbeatResponse, From = Id, To = message.From, Term = _term, Context = message.Context });
    }

    private void HandleSnapshot(Message message)
    {
        var snapshot = message.Snapshot ?? throw new InvalidOperationException("snapshot message without metadata");
        var installed = Restore(snapshot);
        Send(new Message
        {
            Type = MessageType.AppendResponse,
            From = Id,
            To = message.From,
            Term = _term,
            Index = installed ? _log.LastIndex : _log.Committed,
        });
    }

    private bool Restore(SnapshotMetadata snapshot)
    {
        if (snapshot.Index <= _log.Committed)
        {
            return false;
        }

        if (_log.MatchTerm(snapshot.Index, snapshot.Term))
        {
            // Our log already holds the snapshot's last entry: keep the suffix after it and just commit.
            _log.CommitTo(snapshot.Index);
            return false;
        }

        _log.Restore(snapshot);
        _membership = snapshot.Membership;
        _confAppliedIndex = snapshot.Index;
        RebuildProgress(resetAll: true);
        return true;
    }

    private void Send(Message message) => _messages.Add(message);

    /// <summary>Test inspection: the term of the entry at index in this node's log (durable or not).</summary>
    internal bool TryGetLogTerm(ulong index, out ulong term) => _log.TryTerm(index, out term) == LogReadStatus.Ok;

    /// <summary>Test inspection: entries [lo, hi] of this node's log (durable or not) that are still held.</summary>
    internal IReadOnlyList<Entry> GetLogEntries(ulong lo, ulong hi)
    {
        var entries = new List<Entry>();
        lo = Math.Max(lo, _log.FirstIndex);
        hi = Math.Min(hi, _log.LastIndex);
        if (lo <= hi)
        {
            _log.Slice(lo, hi + 1, ulong.MaxValue, entries);
        }

        return entries;
    }

    /// <summary>Test inspection: the first index still held as an entry.</summary>
    internal ulong FirstLogIndex => _log.FirstIndex;

    public RaftStatus GetStatus() => new(
        Id,
        _term,
        _vote,
        _role,
        _leader,
        _log.Committed,
        _log.Applied,
        _log.LastIndex,
        _membership,
        _role == Role.Leader
            ? _progress.Values.Select(p => new PeerProgress(p.Id, p.Match, p.Next, p.State, p.IsLearner, p.RecentActive, p.TicksSinceHeard, p.HeardThisTerm)).ToList()
            : []);
}
