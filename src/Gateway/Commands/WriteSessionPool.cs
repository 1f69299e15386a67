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

    public SessionRegistration Registration { get; set; }

    public ulong NextSequence() => ++LastSequence;

    /// <summary>
    /// Whether <paramref name="sequence"/>'s write must find its session on the cluster: always, once the session is
    /// registered or has had a write before; only an unregistered session's first write may start it.
    /// </summary>
    public bool MustExistFor(ulong sequence) => Registration == SessionRegistration.Registered || sequence > 1;
}

/// <summary>Whether a session was started on the cluster before its first write.</summary>
internal enum SessionRegistration : byte
{
    /// <summary>Not asked yet, or the last attempt failed: the next write registers it first.</summary>
    Unasked,

    /// <summary>The cluster started it: every write may say its session must exist.</summary>
    Registered,

    /// <summary>The cluster cannot (a member's build predates registrations): the first write starts it.</summary>
    NotRegistered,
}

/// <summary>
/// The gateway's free write sessions, shared by all its connections. A write takes one (or a new one when all are
/// busy), so concurrent writes never share a session in flight; the session comes back when its reply is handled, and
/// the next write of any connection may take it. So the cluster keeps about as many sessions as this gateway ever had
/// writes in flight at once, however many connections come and go: a session per connection would leave one in every
/// node's session table, for the whole session timeout, for each short-lived client.
/// </summary>
/// <remarks>Last in, first out: the sessions in use stay few and warm, and the rest may expire on the cluster, which
/// then costs their next write one refused attempt (the cluster client resends it under a new session).</remarks>
internal sealed class WriteSessionPool
{
    private readonly Stack<WriteSession> _free = new();
    private readonly Lock _lock = new();

    public WriteSession Rent()
    {
        lock (_lock)
        {
            if (_free.TryPop(out var session))
            {
                return session;
            }
        }

        return new WriteSession(WriteSessionIds.Next());
    }

    /// <summary>Back to the pool once its write's reply arrived (applied or certainly not applied).</summary>
    public void Return(WriteSession session)
    {
        lock (_lock)
        {
            _free.Push(session);
        }
    }
}
