namespace Dcache.Raft;

/// <summary>The leader's view of one member's log, and the flow control of Appends to it.</summary>
internal sealed class Progress(ulong id, ulong next, int maxInflight, ulong maxInflightBytes, bool isLearner)
{
    public ulong Id { get; } = id;

    public ulong Match { get; set; }

    public ulong Next { get; set; } = next;

    public ReplicationState State { get; private set; } = ReplicationState.Probe;

    /// <summary>In Probe: an Append is out and unanswered, so send no more until a response or a heartbeat response.</summary>
    public bool ProbeSent { get; set; }

    /// <summary>In Snapshot: the index of the snapshot being sent.</summary>
    public ulong PendingSnapshot { get; private set; }

    /// <summary>Heard from since the last CheckQuorum round.</summary>
    public bool RecentActive { get; set; }

    /// <summary>
    /// Leader ticks since this member last answered this leader, or, until it has (<see cref="HeardThisTerm"/> false),
    /// since this leader took over or the member joined: a new leader knows nothing of who is alive.
    /// </summary>
    public int TicksSinceHeard { get; private set; }

    /// <summary>Whether this member has answered this leader at all.</summary>
    public bool HeardThisTerm { get; private set; }

    public void MarkHeard()
    {
        RecentActive = true;
        HeardThisTerm = true;
        TicksSinceHeard = 0;
    }

    public void TickUnheard()
    {
        if (TicksSinceHeard < int.MaxValue)
        {
            TicksSinceHeard++;
        }
    }

    public bool IsLearner { get; set; } = isLearner;

    public Inflights Inflights { get; } = new(maxInflight, maxInflightBytes);

    public bool IsPaused => State switch
    {
        ReplicationState.Probe => ProbeSent,
        ReplicationState.Replicate => Inflights.Full,
        _ => true,
    };

    public void BecomeProbe()
    {
        if (State == ReplicationState.Snapshot)
        {
            var pending = PendingSnapshot;
            Reset(ReplicationState.Probe);
            Next = Math.Max(Match + 1, pending + 1);
        }
        else
        {
            Reset(ReplicationState.Probe);
            Next = Match + 1;
        }
    }

    public void BecomeReplicate()
    {
        Reset(ReplicationState.Replicate);
        Next = Match + 1;
    }

    public void BecomeSnapshot(ulong snapshotIndex)
    {
        Reset(ReplicationState.Snapshot);
        PendingSnapshot = snapshotIndex;
    }

    /// <summary>An acknowledgement up to <paramref name="index"/>; false when it tells nothing new.</summary>
    public bool MaybeUpdate(ulong index)
    {
        var updated = false;
        if (Match < index)
        {
            Match = index;
            updated = true;
            ProbeSent = false;
        }

        Next = Math.Max(Next, index + 1);
        return updated;
    }

    /// <summary>
    /// A rejection of the Append after <paramref name="rejected"/>, with the follower's hint of where logs may agree.
    /// False when the rejection is stale (answers an Append we no longer care about).
    /// </summary>
    public bool MaybeDecreaseTo(ulong rejected, ulong matchHint)
    {
        if (State == ReplicationState.Replicate)
        {
            if (rejected <= Match)
            {
                return false;
            }

            Next = Match + 1;
            return true;
        }

        if (Next - 1 != rejected)
        {
            return false;
        }

        Next = Math.Max(Math.Min(rejected, matchHint + 1), Match + 1);
        ProbeSent = false;
        return true;
    }

    /// <summary>Bookkeeping after sending an Append whose last entry is <paramref name="lastIndex"/>.</summary>
    public void SentEntries(int count, ulong bytes, ulong lastIndex)
    {
        switch (State)
        {
            case ReplicationState.Replicate:
                if (count > 0)
                {
                    Next = lastIndex + 1;
                    Inflights.Add(lastIndex, bytes);
                }

                break;
            case ReplicationState.Probe:
                ProbeSent = true;
                break;
            default:
                throw new InvalidOperationException($"sending entries in state {State}");
        }
    }

    private void Reset(ReplicationState state)
    {
        State = state;
        ProbeSent = false;
        PendingSnapshot = 0;
        Inflights.Reset();
    }
}

/// <summary>Appends sent but not acknowledged, capped by count and by bytes.</summary>
internal sealed class Inflights(int maxCount, ulong maxBytes)
{
    private readonly Queue<(ulong Index, ulong Bytes)> _sent = new();
    private ulong _bytes;

    public bool Full => _sent.Count >= maxCount || (maxBytes > 0 && _bytes >= maxBytes);

    public int Count => _sent.Count;

    public void Add(ulong lastIndex, ulong bytes)
    {
        _sent.Enqueue((lastIndex, bytes));
        _bytes += bytes;
    }

    /// <summary>Frees every Append whose last index is at or below the acknowledged index.</summary>
    public void FreeUpTo(ulong index)
    {
        while (_sent.Count > 0 && _sent.Peek().Index <= index)
        {
            _bytes -= _sent.Dequeue().Bytes;
        }
    }

    public void FreeFirst()
    {
        if (_sent.Count > 0)
        {
            _bytes -= _sent.Dequeue().Bytes;
        }
    }

    public void Reset()
    {
        _sent.Clear();
        _bytes = 0;
    }
}
