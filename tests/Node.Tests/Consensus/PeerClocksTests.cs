using Dcache.Node.Consensus;

namespace Dcache.Node.Tests.Consensus;

public sealed class PeerClocksTests
{
    private const ulong Self = 1;
    private const long Hours2 = 2 * 3_600_000;

    [Fact]
    public void APeersOffsetIsItsReadingMinusTheMidpointOfTheRoundTrip()
    {
        var time = new SettableTime(1_000_000);
        var clocks = new PeerClocks(time);
        var (sent, _, _) = clocks.ForMessageTo(2);
        time.Advance(4);
        var peerReading = time.NowMs + 5_000; // peer 2 runs 5 s ahead, replies 4 ms after we sent
        time.Advance(6);
        clocks.Heard(2, peerReading, sent);

        Assert.Equal(5_000 - 1, clocks.Offsets[2]); // wrong by less than half the 10 ms round trip
        Assert.Equal((time.NowMs, peerReading, 0L), clocks.ForMessageTo(2)); // and the next message echoes its reading
    }

    [Fact]
    public void TheTimeAPeerHeldTheEchoBeforeAnsweringIsNotTakenForTimeOnTheWire()
    {
        // Peer 2 runs 5 s ahead; our reading reached it after 2 ms and waited 90 ms for its next heartbeat, which
        // took 2 ms back. Without the hold time the peer would look 45 ms further ahead than it is.
        var time = new SettableTime(1_000_000);
        var clocks = new PeerClocks(time);
        var (sent, _, _) = clocks.ForMessageTo(2);
        time.Advance(92);
        var peerReading = time.NowMs + 5_000;
        time.Advance(2);
        clocks.Heard(2, peerReading, sent, echoHeldMs: 90);
        Assert.Equal(5_000, clocks.Offsets[2]);

        // And this node tells the peer how long it held the peer's reading.
        time.Advance(30);
        Assert.Equal((time.NowMs, peerReading, 30L), clocks.ForMessageTo(2));
    }

    [Fact]
    public void NoReadingComesFromAnOldEchoOrAPeerThatSendsNone()
    {
        var time = new SettableTime(1_000_000);
        var clocks = new PeerClocks(time);
        var (sent, _, _) = clocks.ForMessageTo(2);
        time.Advance((long)PeerClocks.MaxRoundTrip.TotalMilliseconds + 1);
        clocks.Heard(2, time.NowMs, sent);
        clocks.Heard(3, 0, 0); // a build without clock readings
        clocks.Heard(4, time.NowMs, 0); // no echo yet
        Assert.Empty(clocks.Offsets);
    }

    [Fact]
    public void AMajorityOfRightClocksOutvotesTheLeadersOwn()
    {
        // This node (the leader) runs two hours ahead; both peers agree with each other.
        var clocks = Measured(new SettableTime(10_000_000), (2, -Hours2), (3, -Hours2 + 3));
        Assert.Equal(-Hours2 + 3, clocks.StampOffsetMs([1, 2, 3], Self)); // the median of 0, -2 h and -2 h + 3 ms
    }

    [Fact]
    public void OneWrongPeerDoesNotMoveTheStamps()
    {
        var clocks = Measured(new SettableTime(10_000_000), (2, Hours2), (3, 2));
        Assert.Equal(2, clocks.StampOffsetMs([1, 2, 3], Self)); // the median of 0, 2 ms and 2 h
    }

    [Fact]
    public void WithTwoReadingsTheEarlierClockWins()
    {
        // Stamping ahead expires keys early and the cache's clock never goes back; behind only keeps them longer.
        var time = new SettableTime(10_000_000);
        Assert.Equal(0, Measured(time, (2, Hours2)).StampOffsetMs([1, 2, 3], Self));
        Assert.Equal(-Hours2, Measured(time, (2, -Hours2)).StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void OnlyRecentReadingsOfVotersCount()
    {
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (2, -Hours2), (3, -Hours2), (4, -Hours2));
        Assert.Equal(0, clocks.StampOffsetMs([1], Self)); // 2, 3 and 4 are not voters
        time.Advance((long)PeerClocks.MaxAge.TotalMilliseconds + 1);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void WithTooFewVotersReadTheLastOffsetAMajorityGaveStays()
    {
        // Chaos seed 760340: this node leads with its clock two hours ahead and has read voter 3 only; voter 3 is
        // replaced by 4, and voter 2 was cut off. Alone, its own clock would be the median and every stamp two hours
        // ahead, for good.
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (3, -Hours2));
        Assert.Equal(-Hours2, clocks.StampOffsetMs([1, 2, 3], Self));
        time.Advance(100);
        Assert.Equal(-Hours2, clocks.StampOffsetMs([1, 2, 4], Self));

        // Once voters' readings make a majority again, they rule.
        var (sent, _, _) = clocks.ForMessageTo(4);
        clocks.Heard(4, sent - Hours2 + 7, sent);
        Assert.Equal(-Hours2 + 7, clocks.StampOffsetMs([1, 2, 4], Self));

        // The last majority's offset is kept only as long as a reading would be.
        time.Advance((long)PeerClocks.MaxAge.TotalMilliseconds + 1);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 4], Self));

        // And never when it is later than what the few readings say (chaos seed 760403: a majority counted a peer's
        // reading from before it restarted with another clock): stamping ahead is the harmful error.
        var ahead = Measured(time, (2, Hours2), (3, Hours2));
        Assert.Equal(Hours2, ahead.StampOffsetMs([1, 2, 3], Self)); // two wrong clocks of three: the median is wrong
        Assert.Equal(0, ahead.StampOffsetMs([1, 4, 5], Self)); // too few readings: not later than its own clock
    }

    [Fact]
    public void WhenThisNodesWallClockStepsTheMedianFollowsThePeersNotTheStep()
    {
        // Measured while all three clocks agreed; then this node's clock is stepped an hour back (and later forward)
        // while the peers' readings age by the monotonic clock.
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (2, 0), (3, 0));
        time.Advance(50);
        time.NowMs -= 3_600_000;
        Assert.Equal(3_600_000, clocks.StampOffsetMs([1, 2, 3], Self));
        Assert.Equal(3_600_000, clocks.Offsets[2]);
        time.NowMs += 2 * 3_600_000;
        Assert.Equal(-3_600_000, clocks.StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void AFollowerReadsByItsLeadersClockPlusTheLeadersCorrection()
    {
        // This follower runs an hour behind its leader; the leader's voters put the cluster's time 3 ms behind the
        // leader's clock. Alone, two readings would leave the follower on its own (earlier) clock.
        var time = new SettableTime(10_000_000);
        var clocks = new PeerClocks(time);
        var (sent, _, _) = clocks.ForMessageTo(2);
        clocks.Heard(2, sent + 3_600_000, sent, clusterOffsetMs: -3);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 3], Self));
        Assert.True(clocks.TryClusterOffsetVia(2, out var offset));
        Assert.Equal(3_600_000 - 3, offset);

        Assert.False(clocks.TryClusterOffsetVia(3, out _)); // never heard
        clocks.Heard(2, time.NowMs + 3_600_000, time.NowMs); // no longer leading: publishes nothing
        Assert.False(clocks.TryClusterOffsetVia(2, out _));
        clocks.Heard(2, time.NowMs + 3_600_000, time.NowMs, clusterOffsetMs: 0);
        time.Advance((long)PeerClocks.MaxAge.TotalMilliseconds + 1);
        Assert.False(clocks.TryClusterOffsetVia(2, out _)); // too old
    }

    [Fact]
    public void OnlyWhatALeaderPublishesIsSent()
    {
        var clocks = new PeerClocks(new SettableTime(10_000_000));
        Assert.Null(clocks.PublishedClusterOffsetMs);
        clocks.Publish(-42);
        Assert.Equal(-42, clocks.PublishedClusterOffsetMs);
        clocks.Publish(null);
        Assert.Null(clocks.PublishedClusterOffsetMs);
    }

    private static PeerClocks Measured(SettableTime time, params (ulong Peer, long OffsetMs)[] peers)
    {
        var clocks = new PeerClocks(time);
        foreach (var (peer, offset) in peers)
        {
            var (sent, _, _) = clocks.ForMessageTo(peer);
            clocks.Heard(peer, sent + offset, sent); // an instant round trip
        }

        return clocks;
    }

    private sealed class SettableTime(long nowMs) : TimeProvider
    {
        private long _monotonicMs;

        /// <summary>The wall clock; setting it is a step (as a wrong clock being corrected), the monotonic clock does not follow.</summary>
        public long NowMs { get; set; } = nowMs;

        /// <summary>Time passing: both clocks move.</summary>
        public void Advance(long ms)
        {
            NowMs += ms;
            _monotonicMs += ms;
        }

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.FromUnixTimeMilliseconds(NowMs);

        public override long TimestampFrequency => 1000;

        public override long GetTimestamp() => _monotonicMs;
    }
}
