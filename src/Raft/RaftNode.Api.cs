namespace Dcache.Raft;

// Temporary surface: replaced by the implementation.
public sealed partial class RaftNode
{
    public RaftNode(RaftOptions options, IRaftLogReader storage, IRandomSource random) => throw new NotImplementedException();

    public ulong Id => throw new NotImplementedException();
    public ulong Term => throw new NotImplementedException();
    public Role Role => throw new NotImplementedException();
    public ulong Leader => throw new NotImplementedException();
    public ulong CommitIndex => throw new NotImplementedException();
    public ulong AppliedIndex => throw new NotImplementedException();
    public ulong LastIndex => throw new NotImplementedException();
    /// <summary>The membership as of the applied index.</summary>
    public Membership Membership => throw new NotImplementedException();

    public void Tick() => throw new NotImplementedException();
    public void Step(Message message) => throw new NotImplementedException();
    public ProposeResult Propose(ReadOnlyMemory<byte> data) => throw new NotImplementedException();
    public ProposeResult ProposeConfChange(ConfChange change) => throw new NotImplementedException();
    /// <summary>Outcome arrives in a later Ready: ReadStates (serve once applied reaches Index) or DroppedReads. A request forwarded to the leader can vanish with a lost message: the host times out.</summary>
    public void ReadIndex(ulong context) => throw new NotImplementedException();
    /// <summary>False when this node is not the leader or the target is not a voter.</summary>
    public bool TransferLeadership(ulong target) => throw new NotImplementedException();
    public void ReportSnapshot(ulong peer, bool succeeded) => throw new NotImplementedException();
    public void ReportUnreachable(ulong peer) => throw new NotImplementedException();
    /// <summary>Starts an election now (for bootstrapping a fresh cluster quickly, and tests).</summary>
    public void Campaign() => throw new NotImplementedException();
    public bool HasReady() => throw new NotImplementedException();
    public Ready GetReady() => throw new NotImplementedException();
    public void Advance(Ready ready) => throw new NotImplementedException();
    public RaftStatus GetStatus() => throw new NotImplementedException();

    /// <summary>Test inspection: the term of the entry at index in this node's log (durable or not).</summary>
    internal bool TryGetLogTerm(ulong index, out ulong term) => throw new NotImplementedException();
    /// <summary>Test inspection: entries [lo, hi] of this node's log (durable or not) that are still held.</summary>
    internal IReadOnlyList<Entry> GetLogEntries(ulong lo, ulong hi) => throw new NotImplementedException();
    /// <summary>Test inspection: the first index still held as an entry.</summary>
    internal ulong FirstLogIndex => throw new NotImplementedException();
}
