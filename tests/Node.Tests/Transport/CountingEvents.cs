using Dcache.Node.Transport;

namespace Dcache.Node.Tests.Transport;

/// <summary>A node that takes every message and knows of no removed peer; counts the breaks the transport reports.</summary>
internal sealed class CountingEvents : ITransportEvents
{
    private int _unreachable;

    public int Unreachable => Volatile.Read(ref _unreachable);

    public void PeerUnreachable(ulong peer) => Interlocked.Increment(ref _unreachable);

    /// <summary>The snapshot outcomes reported, in order.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<(ulong Peer, ulong Term, bool Succeeded)> SnapshotsSent { get; } = new();

    public void SnapshotSent(ulong peer, ulong term, bool succeeded) => SnapshotsSent.Enqueue((peer, term, succeeded));
}
