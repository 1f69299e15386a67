using Dcache.Gateway.Cluster;

namespace Dcache.Gateway.Commands;

/// <summary>
/// A write session of the node's session table: writes carry (client id, sequence) so a retried write applies once.
/// The node caches only the last reply per session, so a session has at most one write in flight.
/// </summary>
internal sealed class WriteSession(ulong clientId)
{
    public ulong ClientId { get; } = clientId;

    public ulong LastSequence { get; private set; }

    public ulong NextSequence() => ++LastSequence;
}

/// <summary>
/// A connection's free write sessions. A write takes one (or a new one when all are busy), so pipelined writes run
/// concurrently without ever sharing a session in flight; the session comes back when its reply is handled. Only the
/// connection's own loop touches the pool, so it needs no lock.
/// </summary>
internal sealed class WriteSessionPool
{
    private readonly Stack<WriteSession> _free = new();

    /// <summary>Sessions this pool ever created (= the most writes this connection had in flight at once, plus discards).</summary>
    public int Created { get; private set; }

    public int Free => _free.Count;

    public WriteSession Rent()
    {
        if (_free.TryPop(out var session))
        {
            return session;
        }

        Created++;
        return new WriteSession(WriteSessionIds.Next());
    }

    /// <summary>Back to the pool once its write's reply arrived (applied or certainly not applied).</summary>
    public void Return(WriteSession session) => _free.Push(session);
}
