namespace Dcache.Raft;

public enum ProposeStatus : byte
{
    /// <summary>Appended to the leader's log at (Index, Term). It commits there, or is superseded by another entry at Index.</summary>
    Accepted = 0,
    /// <summary>This node does not lead; LeaderHint names the leader it knows of (0 if none). Nothing was appended.</summary>
    NotLeader,
    /// <summary>Leadership is being handed over; retry at the new leader. Nothing was appended.</summary>
    TransferInProgress,
    /// <summary>A membership change is still uncommitted or unapplied (or the leader has not committed its own term's first entry yet). Nothing was appended.</summary>
    ConfChangePending,
    /// <summary>The membership change does not fit the current configuration; Reason says why. Nothing was appended.</summary>
    InvalidConfChange,
    /// <summary>Too many uncommitted bytes on the leader already; retry later. Nothing was appended.</summary>
    Overloaded,
}

/// <summary>What happened to a proposal. Only <see cref="ProposeStatus.Accepted"/> appended anything.</summary>
public readonly record struct ProposeResult(ProposeStatus Status, ulong Index, ulong Term, ulong LeaderHint, string? Reason = null)
{
    public bool Accepted => Status == ProposeStatus.Accepted;
}
