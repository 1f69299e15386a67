using Dcache.Node.Hosting;

namespace Dcache.Node.Tests.Hosting;

/// <summary>The chaos suite's wrong clock (NodeOptions.TestOnlyClockOffset) moves the wall time only, and is bounded.</summary>
public sealed class TestOnlyOffsetClockTests
{
    private static NodeOptions Options(TimeSpan offset) =>
        new() { NodeId = 1, ClusterSecret = "s", InitialCluster = "1=http://127.0.0.1:7001", TestOnlyClockOffset = offset };

    [Fact]
    public void WallTimeIsMovedWhileTimestampsAndTimersStayTheSystems()
    {
        var offset = TimeSpan.FromMinutes(90);
        var clock = TestOnlyOffsetClock.For(Options(offset));

        var before = TimeProvider.System.GetUtcNow();
        var skewed = clock.GetUtcNow();
        var after = TimeProvider.System.GetUtcNow();
        Assert.InRange(skewed, before + offset, after + offset);

        // Durations measured with it are real ones: the Raft tick and request deadlines must not notice the offset.
        Assert.Equal(TimeProvider.System.TimestampFrequency, clock.TimestampFrequency);
        // Between two readings of the system's, rather than within a second of one (which a thread descheduled between
        // the calls could miss).
        var start = TimeProvider.System.GetTimestamp();
        var timestamp = clock.GetTimestamp();
        var end = TimeProvider.System.GetTimestamp();
        Assert.InRange(timestamp, start, end);
    }

    [Fact]
    public async Task ItsTimersFireAfterRealTime()
    {
        var clock = TestOnlyOffsetClock.For(Options(TimeSpan.FromHours(2)));
        var started = TimeProvider.System.GetTimestamp();

        await Task.Delay(TimeSpan.FromMilliseconds(50), clock);

        // Fired after the delay, not at once (an offset leaking into timers would make every due time look past).
        Assert.True(TimeProvider.System.GetElapsedTime(started) >= TimeSpan.FromMilliseconds(40));
    }

    [Fact]
    public void NoOffsetIsTheSystemClock() => Assert.Same(TimeProvider.System, TestOnlyOffsetClock.For(Options(TimeSpan.Zero)));

    [Theory]
    [InlineData("-1.00:00:00", true)]
    [InlineData("1.00:00:00", true)]
    [InlineData("-00:10:00", true)]
    [InlineData("1.00:00:01", false)]
    [InlineData("-2.00:00:00", false)]
    public void TheOffsetIsBoundedToADay(string offset, bool valid)
    {
        var options = Options(TimeSpan.Parse(offset, System.Globalization.CultureInfo.InvariantCulture));
        if (valid)
        {
            options.Validate();
        }
        else
        {
            Assert.Contains("TestOnlyClockOffset", Assert.Throws<InvalidOperationException>(options.Validate).Message, StringComparison.Ordinal);
        }
    }
}
