namespace Dcache.Raft;

public sealed partial class RaftNode
{
    /// <summary>Proposes application data. Only a leader accepts; the result says where it was appended.</summary>
    public ProposeResult Propose(ReadOnlyMemory<byte> data)
    {
        if (RefuseProposal() is { } refused)
        {
            return refused;
        }

        var entry = new Entry(0, 0, EntryType.Normal, data);
        if (_options.MaxUncommittedBytes > 0 && _uncommittedBytes > 0 && _uncommittedBytes + entry.Size > _options.MaxUncommittedBytes)
        {
            return new ProposeResult(ProposeStatus.Overloaded, 0, 0, Id, "too many uncommitted bytes");
        }

        return AcceptProposal(entry);
    }

    /// <summary>Proposes a single-server membership change; refused while another is pending.</summary>
    public ProposeResult ProposeConfChange(ConfChange change)
    {
        if (RefuseProposal() is { } refused)
        {
            return refused;
        }

        if (_pendingConfIndex > _log.Applied)
        {
            return new ProposeResult(ProposeStatus.ConfChangePending, 0, 0, Id, $"the change at index {_pendingConfIndex} is not applied yet");
        }

        if (_membership.Validate(change) is { } reason)
        {
            return new ProposeResult(ProposeStatus.InvalidConfChange, 0, 0, Id, reason);
        }

        var result = AcceptProposal(new Entry(0, 0, EntryType.ConfChange, change.Encode()));
        _pendingConfIndex = result.Index;
        return result;
    }

    private ProposeResult? RefuseProposal()
    {
        if (_role != Role.Leader)
        {
            return new ProposeResult(ProposeStatus.NotLeader, 0, 0, _leader);
        }

        if (_leadTransferee != 0)
        {
            return new ProposeResult(ProposeStatus.TransferInProgress, 0, 0, _leadTransferee);
        }

        return null;
    }

    private ProposeResult AcceptProposal(Entry entry)
    {
        AppendEntry(entry);
        // Followers hear of it when the next Ready is built: every proposal until then rides in the same Appends.
        _broadcastPending = true;
        return new ProposeResult(ProposeStatus.Accepted, _log.LastIndex, _term, Id);
    }

    /// <summary>
    /// The voter best placed to take over (0: none, or not the leader): one that answered within the last two heartbeat
    /// rounds before one that did not (the most caught-up voter may be one that just died), then the one with the most
    /// of the log, then the one heard from last, then the lowest id.
    /// </summary>
    public ulong TransferCandidate()
    {
        if (_role != Role.Leader)
        {
            return 0;
        }

        Progress? best = null;
        foreach (var pr in _progress.Values)
        {
            if (pr.Id == Id || !_membership.IsVoter(pr.Id))
            {
                continue;
            }

            if (best is null || Better(pr, best))
            {
                best = pr;
            }
        }

        return best?.Id ?? 0;

        bool Better(Progress candidate, Progress than)
        {
            var heardWithin = 2 * _options.HeartbeatTicks;
            var candidateLive = candidate.HeardThisTerm && candidate.TicksSinceHeard <= heardWithin;
            var thanLive = than.HeardThisTerm && than.TicksSinceHeard <= heardWithin;
            if (candidateLive != thanLive)
            {
                return candidateLive;
            }

            if (candidate.Match != than.Match)
            {
                return candidate.Match > than.Match;
            }

            return candidate.TicksSinceHeard != than.TicksSinceHeard ? candidate.TicksSinceHeard < than.TicksSinceHeard : candidate.Id < than.Id;
        }
    }

    /// <summary>Hands leadership to <paramref name="target"/>: brings it up to date, then tells it to campaign. False when impossible.</summary>
    public bool TransferLeadership(ulong target)
    {
        if (_role != Role.Leader || target == Id || !_membership.IsVoter(target) || !_progress.TryGetValue(target, out var pr))
        {
            return false;
        }

        if (_leadTransferee == target)
        {
            return true;
        }

        _leadTransferee = target;
        _electionElapsed = 0; // the transfer is abandoned after one election timeout
        if (pr.Match == _log.LastIndex)
        {
            SendTimeoutNow(target);
        }
        else
        {
            SendAppend(target, sendIfEmpty: true);
        }

        return true;
    }

    /// <summary>The host finished (or failed) streaming a snapshot to <paramref name="peer"/>.</summary>
    public void ReportSnapshot(ulong peer, bool succeeded)
    {
        if (_role != Role.Leader || !_progress.TryGetValue(peer, out var pr) || pr.State != ReplicationState.Snapshot)
        {
            return;
        }

        if (!succeeded)
        {
            pr.BecomeProbe();
            pr.Next = pr.Match + 1;
        }
        else
        {
            pr.BecomeProbe();
        }

        // Wait for the follower's answer (or a heartbeat response) before the next Append.
        pr.ProbeSent = true;
    }

    /// <summary>The host could not deliver a message to <paramref name="peer"/>: stop pipelining to it.</summary>
    public void ReportUnreachable(ulong peer)
    {
        if (_role == Role.Leader && _progress.TryGetValue(peer, out var pr) && pr.State == ReplicationState.Replicate)
        {
            pr.BecomeProbe();
        }
    }

    private void AppendEntry(Entry entry)
    {
        entry = entry with { Index = _log.LastIndex + 1, Term = _term };
        _uncommittedBytes += entry.Size;
        _log.Append(entry);
        _progress[Id].MaybeUpdate(_log.LastIndex);
        MaybeCommit(); // a single-voter cluster commits at once
    }

    private void StepLeader(Message message)
    {
        switch (message.Type)
        {
            case MessageType.ReadIndex:
                HandleReadIndexRequest(message.From, message.Context);
                return;
        }

        if (!_progress.TryGetValue(message.From, out var pr))
        {
            return;
        }

        switch (message.Type)
        {
            case MessageType.AppendResponse:
                pr.MarkHeard();
                HandleAppendResponse(message, pr);
                break;
            case MessageType.HeartbeatResponse:
                pr.MarkHeard();
                pr.ProbeSent = false;
                if (pr.State == ReplicationState.Replicate && pr.Inflights.Full)
                {
                    // The follower is alive but the window is full: if those Appends were lost, nothing else would
                    // ever free a slot. Free the oldest so one more Append (a retransmission in effect) can go.
                    pr.Inflights.FreeFirst();
                }

                if (pr.Match < _log.LastIndex)
                {
                    SendAppend(message.From, sendIfEmpty: true);
                }

                HandleReadAck(message.From, message.Context);
                break;
        }
    }

    private void HandleAppendResponse(Message message, Progress pr)
    {
        if (message.Reject)
        {
            var nextProbe = message.RejectHint;
            if (message.LogTerm > 0)
            {
                nextProbe = _log.FindConflictByTerm(message.RejectHint, message.LogTerm);
            }

            if (pr.MaybeDecreaseTo(message.Index, nextProbe))
            {
                if (pr.State == ReplicationState.Replicate)
                {
                    pr.BecomeProbe();
                }

                SendAppend(message.From, sendIfEmpty: true);
            }

            return;
        }

        var wasPaused = pr.IsPaused;
        var updated = pr.MaybeUpdate(message.Index);
        if (!updated && !(pr.Match == message.Index && pr.State == ReplicationState.Probe))
        {
            return; // stale: tells nothing new
        }

        switch (pr.State)
        {
            case ReplicationState.Probe:
                pr.BecomeReplicate();
                break;
            case ReplicationState.Snapshot when pr.Match + 1 >= _log.FirstIndex:
                pr.BecomeProbe();
                pr.BecomeReplicate();
                break;
            case ReplicationState.Replicate:
                pr.Inflights.FreeUpTo(message.Index);
                break;
        }

        if (MaybeCommit())
        {
            BroadcastAppend();
        }
        else if (wasPaused)
        {
            SendAppend(message.From, sendIfEmpty: true);
        }

        // Keep the pipeline full while there is more to send.
        while (SendAppend(message.From, sendIfEmpty: false))
        {
        }

        if (message.From == _leadTransferee && pr.Match == _log.LastIndex)
        {
            SendTimeoutNow(message.From);
            if (!_membership.IsVoter(Id))
            {
                BecomeFollower(_term, 0); // a removed leader's handover is done (see ApplyConfChange)
            }
        }
    }

    /// <summary>
    /// Sent only to a target that holds our whole log. It carries our last entry and commit index, as an empty Append
    /// would: a removed leader steps down right after sending it, and the commit that removed it must reach the target
    /// even if the Append carrying it is lost or overtaken (with two voters, the target cannot win without it).
    /// </summary>
    private void SendTimeoutNow(ulong target) =>
        Send(new Message
        {
            Type = MessageType.TimeoutNow,
            From = Id,
            To = target,
            Term = _term,
            Index = _log.LastIndex,
            LogTerm = _log.LastTerm,
            Commit = _log.Committed,
        });

    /// <summary>
    /// Advances the commit index to the highest index a quorum of voters holds, but only if that entry is of the
    /// current term: entries of earlier terms commit indirectly (Raft paper, figure 8).
    /// </summary>
    private bool MaybeCommit()
    {
        Span<ulong> matches = stackalloc ulong[_membership.Voters.Count];
        var n = 0;
        foreach (var voter in _membership.Voters)
        {
            matches[n++] = _progress.TryGetValue(voter, out var pr) ? pr.Match : 0;
        }

        if (n == 0)
        {
            return false;
        }

        matches.Sort();
        var quorumIndex = matches[n - Quorum];
        if (quorumIndex <= _log.Committed)
        {
            return false;
        }

        var countsInThisTerm = _log.TermOrZero(quorumIndex) == _term;
        if (!countsInThisTerm && !_options.Mutation.HasFlag(SafetyMutation.CommitPreviousTermByCounting))
        {
            return false;
        }

        var hadCommittedInTerm = CommittedInCurrentTerm;
        _log.CommitTo(quorumIndex);
        if (!hadCommittedInTerm && CommittedInCurrentTerm)
        {
            ReleaseReadsAwaitingFirstCommit();
        }

        return true;
    }

    private bool CommittedInCurrentTerm => _log.TermOrZero(_log.Committed) == _term;

    private void BroadcastAppend()
    {
        foreach (var id in _progress.Keys)
        {
            if (id != Id)
            {
                SendAppend(id, sendIfEmpty: true);
            }
        }
    }

    /// <summary>Sends the next Append (or the snapshot, when the entries it needs are compacted). False when nothing was sent.</summary>
    private bool SendAppend(ulong to, bool sendIfEmpty)
    {
        var pr = _progress[to];
        if (pr.IsPaused)
        {
            return false;
        }

        var prevIndex = pr.Next - 1;
        var termStatus = _log.TryTerm(prevIndex, out var prevTerm);
        Entry[] entries = [];
        var entriesStatus = termStatus == LogReadStatus.Ok
            ? _log.Slice(pr.Next, _log.LastIndex + 1, _options.MaxSizePerMessage, out entries)
            : termStatus;

        if (termStatus == LogReadStatus.Compacted || entriesStatus == LogReadStatus.Compacted)
        {
            return SendSnapshot(to, pr);
        }

        if (termStatus != LogReadStatus.Ok || entriesStatus != LogReadStatus.Ok)
        {
            throw new InvalidOperationException($"cannot read the log for peer {to} at {prevIndex}: {termStatus}/{entriesStatus}");
        }

        if (entries.Length == 0 && !sendIfEmpty)
        {
            return false;
        }

        ulong bytes = 0;
        foreach (var entry in entries)
        {
            bytes += entry.Size;
        }

        Send(new Message
        {
            Type = MessageType.Append,
            From = Id,
            To = to,
            Term = _term,
            Index = prevIndex,
            LogTerm = prevTerm,
            Entries = entries,
            Commit = _log.Committed,
        });
        pr.SentEntries(entries.Length, bytes, entries.Length > 0 ? entries[^1].Index : prevIndex);
        return true;
    }

    private bool SendSnapshot(ulong to, Progress pr)
    {
        if (!pr.RecentActive)
        {
            return false; // don't stream a snapshot to a peer that seems down
        }

        var snapshot = _log.Snapshot;
        if (snapshot.IsEmpty)
        {
            throw new InvalidOperationException($"peer {to} needs compacted entries but there is no snapshot");
        }

        Send(new Message { Type = MessageType.Snapshot, From = Id, To = to, Term = _term, Snapshot = snapshot });
        pr.BecomeSnapshot(snapshot.Index);
        return true;
    }

    private void BroadcastHeartbeat()
    {
        foreach (var (id, pr) in _progress)
        {
            if (id != Id)
            {
                SendHeartbeat(id, pr);
            }
        }
    }

    private void SendHeartbeat(ulong to, Progress pr) => Send(new Message
    {
        Type = MessageType.Heartbeat,
        From = Id,
        To = to,
        Term = _term,
        // Never more than the follower holds: it may not have the entries up to our commit yet.
        Commit = Math.Min(pr.Match, _log.Committed),
        Context = _lastBroadcastReadRound,
    });
}
