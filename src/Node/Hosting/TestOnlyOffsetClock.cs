namespace Dcache.Node.Hosting;

/// <summary>
/// TEST ONLY (<see cref="NodeOptions.TestOnlyClockOffset"/>): a clock whose wall time runs ahead of (or behind) the
/// machine's by a fixed offset, as on a host whose clock was set wrong. Only the wall time moves: timestamps and timers
/// stay the system's, so ticks, timeouts and measured durations behave as on any node and only what the node stamps
/// with the time of day (the leader's proposal times: expiry times, the cache's clock, session idleness) is off.
/// </summary>
public sealed class TestOnlyOffsetClock(TimeProvider inner, TimeSpan offset) : TimeProvider
{
    public TimeSpan Offset { get; } = offset;

    public override DateTimeOffset GetUtcNow() => inner.GetUtcNow() + Offset;

    public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

    public override long TimestampFrequency => inner.TimestampFrequency;

    public override long GetTimestamp() => inner.GetTimestamp();

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        inner.CreateTimer(callback, state, dueTime, period);

    /// <summary>The node's clock: the system's, or the system's moved by a nonzero test-only offset.</summary>
    public static TimeProvider For(NodeOptions options) =>
        options.TestOnlyClockOffset == TimeSpan.Zero ? System : new TestOnlyOffsetClock(System, options.TestOnlyClockOffset);
}
