namespace Dcache.Protocol;

/// <summary>
/// How long a long-lived stream that broke waits before it opens again: from <paramref name="first"/>, doubling up to
/// <paramref name="longest"/> while breaks follow one another, and back to <paramref name="first"/> after a stream the
/// other end answered (a new failure, not the same one again). A write that only reached the local socket buffer says
/// nothing about the other end: against a peer that accepts connections and drops them, only an answer may restart it.
/// </summary>
public sealed class ReconnectBackoff(TimeSpan first, TimeSpan longest)
{
    private TimeSpan _next;

    /// <summary>The wait chosen at the last break (zero until the first).</summary>
    public TimeSpan Last { get; private set; }

    /// <summary>The wait before reopening a stream that just broke; <paramref name="answered"/>: the other end answered on it.</summary>
    public TimeSpan AfterBreak(bool answered)
    {
        if (answered || _next == TimeSpan.Zero)
        {
            _next = first;
        }

        Last = _next;
        _next = _next * 2 < longest ? _next * 2 : longest;
        return Last;
    }
}
