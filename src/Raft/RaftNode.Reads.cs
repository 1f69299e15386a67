namespace Dcache.Raft;

public sealed partial class RaftNode
{
    // Linearizable reads (ReadIndex). A request joins the open "round"; the round is announced in a heartbeat when
    // the next Ready is built, so all requests between two Readys share one heartbeat round (sent to a quorum's worth
    // of voters, see FlushReadRound). A round is confirmed
    // once a quorum of voters has answered a heartbeat carrying that round (or a later one): then this node still
    // led when the requests were made, and the commit index recorded with each request is safe to read at.
    private readonly Queue<PendingRead> _pendingReads = new();
    private readonly List<(ulong From, ulong Context)> _readsAwaitingFirstCommit = [];
    private readonly SortedDictionary<ulong, ulong> _ackedReadRound = [];
    private readonly SortedSet<ulong> _forwardedReads = [];
    private readonly List<(ulong Id, ulong Acked)> _readRoundTargets = [];
    private List<ReadState> _readStates = [];
    private List<ulong> _droppedReads = [];
    private ulong _readRoundCounter;
    private ulong _lastBroadcastReadRound;
    private bool _readRoundOpen;

    private readonly record struct PendingRead(ulong From, ulong Context, ulong Index, ulong Round);

    /// <summary>
    /// Asks for a linearizable read index for the host's request <paramref name="context"/> (unique per request, also
    /// across the host's restarts: a forwarded request's answer can arrive after one).
    /// The outcome arrives in a later Ready: a ReadState (serve once applied reaches its Index) or DroppedReads.
    /// A request forwarded to the leader can vanish with a lost message: the host times out.
    /// </summary>
    public void ReadIndex(ulong context)
    {
        switch (_role)
        {
            case Role.Leader:
                HandleReadIndexRequest(Id, context);
                break;
            case Role.Follower when _leader != 0:
                _forwardedReads.Add(context);
                Send(new Message { Type = MessageType.ReadIndex, From = Id, To = _leader, Term = _term, Context = context });
                break;
            default:
                _droppedReads.Add(context);
                break;
        }
    }

    private void HandleReadIndexRequest(ulong from, ulong context)
    {
        if (_membership.Voters.Count == 1 && _membership.IsVoter(Id))
        {
            RespondToRead(from, context, _log.Committed);
            return;
        }

        if (!CommittedInCurrentTerm)
        {
            // Until an entry of this term commits, our commit index may lag what earlier leaders committed.
            _readsAwaitingFirstCommit.Add((from, context));
            return;
        }

        if (_options.Mutation.HasFlag(SafetyMutation.ReadIndexWithoutQuorum))
        {
            RespondToRead(from, context, _log.Committed);
            return;
        }

        if (!_readRoundOpen)
        {
            _readRoundOpen = true;
            _readRoundCounter++;
        }

        _pendingReads.Enqueue(new PendingRead(from, context, _log.Committed, _readRoundCounter));
    }

    private void ReleaseReadsAwaitingFirstCommit()
    {
        if (_readsAwaitingFirstCommit.Count == 0)
        {
            return;
        }

        var waiting = _readsAwaitingFirstCommit.ToArray();
        _readsAwaitingFirstCommit.Clear();
        foreach (var (from, context) in waiting)
        {
            HandleReadIndexRequest(from, context);
        }
    }

    /// <summary>
    /// Announces the open round in a heartbeat to just enough voters to make a quorum with this node, those that
    /// answered the latest rounds first. Any quorum confirms a round, and every follower that gets the heartbeat pays
    /// for a receive and a reply, so asking all of them spends a follower's CPU per round for nothing. Regular
    /// heartbeats carry the latest round to every follower, and a tick with a round still unconfirmed asks all of
    /// them at once (<see cref="TickLeader"/>), so a chosen voter that has gone quiet delays reads by a tick at most.
    /// </summary>
    private void FlushReadRound()
    {
        if (!_readRoundOpen)
        {
            return;
        }

        _readRoundOpen = false;
        _lastBroadcastReadRound = _readRoundCounter;
        SendReadRoundToQuorum();
        ReleaseConfirmedReads();
    }

    private void SendReadRoundToQuorum()
    {
        _readRoundTargets.Clear();
        foreach (var voter in _membership.Voters)
        {
            if (voter != Id && _progress.ContainsKey(voter))
            {
                _readRoundTargets.Add((voter, _ackedReadRound.GetValueOrDefault(voter)));
            }
        }

        // Most recent answer first; ties by id, so the choice is deterministic.
        _readRoundTargets.Sort(static (a, b) => a.Acked != b.Acked ? b.Acked.CompareTo(a.Acked) : a.Id.CompareTo(b.Id));
        var needed = Quorum - (_membership.IsVoter(Id) ? 1 : 0);
        for (var i = 0; i < needed && i < _readRoundTargets.Count; i++)
        {
            SendHeartbeat(_readRoundTargets[i].Id, _progress[_readRoundTargets[i].Id]);
        }
    }

    /// <summary>A round was announced and is not confirmed yet: its reads are waiting on some follower.</summary>
    private bool ReadRoundUnconfirmed => _pendingReads.Count > 0 && _pendingReads.Peek().Round <= _lastBroadcastReadRound;

    private void HandleReadAck(ulong from, ulong round)
    {
        if (round == 0)
        {
            return;
        }

        if (!_ackedReadRound.TryGetValue(from, out var acked) || acked < round)
        {
            _ackedReadRound[from] = round;
        }

        ReleaseConfirmedReads();
    }

    private void ReleaseConfirmedReads()
    {
        while (_pendingReads.Count > 0 && RoundConfirmed(_pendingReads.Peek().Round))
        {
            var read = _pendingReads.Dequeue();
            RespondToRead(read.From, read.Context, read.Index);
        }
    }

    private bool RoundConfirmed(ulong round)
    {
        if (round > _lastBroadcastReadRound)
        {
            return false;
        }

        var acks = 0;
        foreach (var voter in _membership.Voters)
        {
            if (voter == Id || (_ackedReadRound.TryGetValue(voter, out var acked) && acked >= round))
            {
                acks++;
            }
        }

        return acks >= Quorum;
    }

    private void RespondToRead(ulong from, ulong context, ulong index)
    {
        if (from == Id)
        {
            _readStates.Add(new ReadState(context, index));
        }
        else
        {
            Send(new Message { Type = MessageType.ReadIndexResponse, From = Id, To = from, Term = _term, Context = context, Index = index });
        }
    }

    /// <summary>
    /// The host gave up on the read-index request <paramref name="context"/> (its reads timed out): a follower forgets it,
    /// and ignores an answer that still comes. It keeps every request it forwarded until the answer or a change of role
    /// or leader, so each request or answer lost on the way would otherwise stay for as long as the leader leads.
    /// </summary>
    public void AbandonRead(ulong context) => _forwardedReads.Remove(context);

    /// <summary>Read-index requests this follower forwarded and has not had answered (test inspection).</summary>
    internal int ForwardedReadCount => _forwardedReads.Count;

    private void HandleReadIndexResponse(Message message)
    {
        if (!_forwardedReads.Remove(message.Context))
        {
            return; // already given up on
        }

        if (message.Reject)
        {
            _droppedReads.Add(message.Context);
        }
        else
        {
            _readStates.Add(new ReadState(message.Context, message.Index));
        }
    }

    /// <summary>Fails every read this node was serving or waiting for: after a change of role or leader it must not answer them.</summary>
    private void DropPendingReads()
    {
        foreach (var read in _pendingReads)
        {
            DropRead(read.From, read.Context);
        }

        foreach (var (from, context) in _readsAwaitingFirstCommit)
        {
            DropRead(from, context);
        }

        foreach (var context in _forwardedReads)
        {
            _droppedReads.Add(context);
        }

        _pendingReads.Clear();
        _readsAwaitingFirstCommit.Clear();
        _forwardedReads.Clear();
        _ackedReadRound.Clear();
        _readRoundOpen = false;
    }

    private void DropRead(ulong from, ulong context)
    {
        if (from == Id)
        {
            _droppedReads.Add(context);
        }
        else
        {
            Send(new Message { Type = MessageType.ReadIndexResponse, From = Id, To = from, Term = _term, Context = context, Reject = true });
        }
    }
}
