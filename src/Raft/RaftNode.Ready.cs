namespace Dcache.Raft;

public sealed partial class RaftNode
{
    /// <summary>True when <see cref="GetReady"/> has something for the host.</summary>
    public bool HasReady()
    {
        if (_readyInProgress is not null)
        {
            return false;
        }

        return _messages.Count > 0
            || _broadcastPending
            || _readRoundOpen
            || _log.HasUnstableEntries
            || _log.UnstableSnapshot is not null
            || _log.HasNextCommittedEntries
            || _readStates.Count > 0
            || _droppedReads.Count > 0
            || CurrentHardState != _lastHardState
            || new SoftState(_leader, _role) != _lastSoftState;
    }

    /// <summary>
    /// Takes what the host must do now (see <see cref="Ready"/> for the order). Call <see cref="Advance"/> when done,
    /// before the next GetReady.
    /// </summary>
    public Ready GetReady()
    {
        if (_readyInProgress is not null)
        {
            throw new InvalidOperationException("the previous Ready has not been advanced");
        }

        if (_broadcastPending)
        {
            _broadcastPending = false;
            BroadcastAppend();
        }

        FlushReadRound();

        var softState = new SoftState(_leader, _role);
        var hardState = CurrentHardState;
        var entries = _log.UnstableEntries();
        if (_deferEntriesOnce)
        {
            // Planted bug (mutation tests): the acknowledgement goes out one Ready before the entries are persisted.
            _deferEntriesOnce = false;
            entries = [];
        }

        var (beforePersistence, afterPersistence) = SplitByDurability(_messages);
        var ready = new Ready
        {
            SoftState = softState != _lastSoftState ? softState : null,
            HardState = hardState != _lastHardState ? hardState : null,
            Entries = entries,
            Snapshot = _log.UnstableSnapshot,
            CommittedEntries = _log.NextCommittedEntries(_options.MaxCommittedSizePerReady),
            MustSync = entries.Count > 0 || _log.UnstableSnapshot is not null || hardState.Term != _lastHardState.Term || hardState.Vote != _lastHardState.Vote,
            MessagesBeforePersistence = beforePersistence,
            Messages = afterPersistence,
            ReadStates = _readStates,
            DroppedReads = _droppedReads,
        };

        _messages = [];
        _readStates = [];
        _droppedReads = [];
        _lastSoftState = softState;
        _lastHardState = hardState;
        _readyInProgress = ready;
        return ready;
    }

    /// <summary>
    /// Separates the leader's Append messages that promise nothing about this node's disk (they may go out while the
    /// Ready is being persisted: Raft thesis 10.2.1) from the messages that must wait for it. An Append qualifies when
    /// the commit index it carries covers only entries already durable here. A single voter commits what it appends at
    /// once: a learner that applied such a commit before the leader's disk held it could apply an entry the restarted
    /// leader lacks. The same rule keeps back a leader's appends in a term it has not persisted yet: only a single voter
    /// leads such a term (others win by votes, asked for once the term was durable), and its first entry of the term,
    /// committed at once, is not durable either. The leader counts its own entries towards a commit when it appends
    /// them; that is safe because nothing the core derives from a commit leaves it (applying, replies, reads, commit
    /// indexes in messages) before a later Ready, by which time this one is durable.
    /// </summary>
    private (IReadOnlyList<Message> BeforePersistence, IReadOnlyList<Message> AfterPersistence) SplitByDurability(List<Message> messages)
    {
        var durableLastIndex = _log.DurableLastIndex;
        var early = 0;
        foreach (var message in messages)
        {
            if (MayPrecedePersistence(message, durableLastIndex))
            {
                early++;
            }
        }

        if (early == 0)
        {
            return ([], messages);
        }

        if (early == messages.Count)
        {
            return (messages, []);
        }

        var before = new List<Message>(early);
        var after = new List<Message>(messages.Count - early);
        foreach (var message in messages)
        {
            (MayPrecedePersistence(message, durableLastIndex) ? before : after).Add(message);
        }

        return (before, after);
    }

    private bool MayPrecedePersistence(Message message, ulong durableLastIndex) =>
        message.Type == MessageType.Append
        && (message.Commit <= durableLastIndex || _options.Mutation.HasFlag(SafetyMutation.AppendsAheadOfDurableCommit));

    /// <summary>Confirms that the host persisted, sent and applied everything in <paramref name="ready"/>.</summary>
    public void Advance(Ready ready)
    {
        if (!ReferenceEquals(ready, _readyInProgress))
        {
            throw new InvalidOperationException("Advance must be called with the Ready last returned by GetReady");
        }

        _readyInProgress = null;
        if (ready.Entries.Count > 0)
        {
            var last = ready.Entries[^1];
            _log.StableTo(last.Index, last.Term);
        }

        if (ready.Snapshot is { } snapshot)
        {
            _log.StableSnapshotTo(snapshot.Index);
            if (snapshot.Index > _log.Applied)
            {
                _log.AppliedTo(snapshot.Index);
            }
        }

        if (ready.CommittedEntries.Count > 0)
        {
            foreach (var entry in ready.CommittedEntries)
            {
                if (entry.Type == EntryType.ConfChange && entry.Index > _confAppliedIndex)
                {
                    ApplyConfChange(ConfChange.Decode(entry.Data.Span), entry.Index);
                }

                if (_role == Role.Leader && entry.Term == _term)
                {
                    _uncommittedBytes = _uncommittedBytes > entry.Size ? _uncommittedBytes - entry.Size : 0;
                }
            }

            _log.AppliedTo(ready.CommittedEntries[^1].Index);
        }

        if (_deferredTransferTicks > 0 && _role == Role.Follower && !HasUnappliedConfChange())
        {
            // The change that held back a TimeoutNow is applied now: the election it asked for starts (if this node is
            // still a voter under the configuration in effect; StartElection checks).
            _deferredTransferTicks = 0;
            StartElection(transfer: true);
        }
    }

    /// <summary>On restart, the membership must reflect every committed change, not just the snapshot's.</summary>
    private void ApplyCommittedConfChangesAtStart()
    {
        if (_log.Committed <= _confAppliedIndex)
        {
            return;
        }

        var entries = new List<Entry>();
        var status = _log.Slice(_confAppliedIndex + 1, _log.Committed + 1, ulong.MaxValue, entries);
        if (status != LogReadStatus.Ok)
        {
            throw new InvalidOperationException($"node {Id}: committed entries after the snapshot are unreadable: {status}");
        }

        foreach (var entry in entries)
        {
            if (entry.Type == EntryType.ConfChange)
            {
                _membership = _membership.Apply(ConfChange.Decode(entry.Data.Span));
                _confAppliedIndex = entry.Index;
            }
        }
    }

    private void ApplyConfChange(ConfChange change, ulong index)
    {
        _confAppliedIndex = index;
        _membership = _membership.Apply(change);
        RebuildProgress(resetAll: false);

        if (_role is Role.Candidate or Role.PreCandidate)
        {
            // The votes so far were asked of the configuration just replaced (a candidate can learn of a commit from
            // a rejection): start over under the new one, if it is still a voter there.
            BecomeFollower(_term, 0);
            return;
        }

        if (_role != Role.Leader)
        {
            return;
        }

        if (!_membership.IsVoter(Id))
        {
            // Removed (or demoted) leader: the configuration without it has committed. Hand over to the voter best
            // placed to take over (TransferCandidate: one still answering, then the most up to date; TimeoutNow
            // carries the commit that removed us), then step down. If none holds our whole log yet, lead on as in a
            // transfer (no proposals; commitment by the new configuration's voters alone) until it does, or for an
            // election timeout (TickLeader; no limit when a single voter is left): stepping down at once would leave the remaining voters to learn of the removal from the one Append sent with it,
            // and a last voter that missed it can never win an election: it needs our vote, and our log is longer.
            var successor = TransferCandidate() is var candidate and not 0 ? _progress[candidate] : null;
            if (successor is not null && successor.Match != _log.LastIndex)
            {
                _leadTransferee = successor.Id;
                _electionElapsed = 0;
                SendAppend(successor.Id, sendIfEmpty: true);
                return;
            }

            if (successor is not null)
            {
                SendTimeoutNow(successor.Id);
            }

            BecomeFollower(_term, 0);
            return;
        }

        if (_leadTransferee != 0 && !_membership.IsVoter(_leadTransferee))
        {
            _leadTransferee = 0;
        }

        // A read round may wait on a voter just removed, whose answer now counts for nothing: judged by the new voters
        // (with one voter left, this leader alone), it may be confirmed already, and nothing else would look again.
        ReleaseConfirmedReads();

        // The quorum may have shrunk, committing more; new members need their first Append.
        if (MaybeCommit())
        {
            BroadcastAppend();
        }
        else
        {
            foreach (var id in _progress.Keys)
            {
                if (id != Id)
                {
                    SendAppend(id, sendIfEmpty: false);
                }
            }
        }
    }
}
