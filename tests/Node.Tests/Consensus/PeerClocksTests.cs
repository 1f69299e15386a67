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
        Assert.Equal(0, Measured(time, (2, -Hours2), (3, -Hours2), (4, -Hours2)).StampOffsetMs([1], Self)); // 2, 3 and 4 are not voters

        var clocks = Measured(time, (2, -Hours2), (3, -Hours2));
        time.Advance((long)clocks.ReadingsUsableFor.TotalMilliseconds + 1);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void AReadingTakenBeforeAPeerRestartedIsNotCountedAsItsClock()
    {
        // Chaos seed 760403: this node's clock is right. Peer 1 ran 86 min ahead, then restarted with its clock right
        // at an address this node could not reach yet; peer 3 restarted 97 min ahead. Counting peer 1's old reading,
        // two clocks of three were wrong and the stamps 86 min ahead.
        const long Minutes86 = 86 * 60_000;
        const long Minutes97 = 97 * 60_000;
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (1, Minutes86));
        time.Advance(7_000);
        Hear(clocks, 3, Minutes97);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 3], 2)); // 7 s old: past ReadingsUsableFor

        // Within ReadingsUsableFor, the broken stream is what tells: a restart breaks it.
        var fresh = Measured(time, (1, Minutes86), (3, Minutes97));
        Assert.Equal(Minutes86, fresh.StampOffsetMs([1, 2, 3], 2));
        fresh.Forget(1);
        Assert.DoesNotContain(1UL, fresh.Offsets.Keys);
        Assert.False(fresh.TryClusterOffsetVia(1, out _));
        Assert.Equal(0, fresh.StampOffsetMs([1, 2, 3], 2));
    }

    [Fact]
    public void WithTooFewVotersReadTheLastTimeAMajorityGaveStays()
    {
        // Chaos seed 760340: this node leads with its clock two hours ahead and has read voter 3 only; voter 3 is
        // replaced by 4, and voter 2 was cut off. Alone, its own clock would be the median and every stamp two hours
        // ahead, for good.
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (3, -Hours2));
        Assert.Equal(-Hours2, clocks.StampOffsetMs([1, 2, 3], Self));
        time.Advance(100);
        Assert.Equal(-Hours2, clocks.StampOffsetMs([1, 2, 4], Self));

        // Carried forward on the monotonic clock, past the readings' own life and across a step of this node's clock.
        time.Advance((long)clocks.ReadingsUsableFor.TotalMilliseconds + 1);
        time.NowMs += 3_600_000;
        Assert.Equal(-Hours2 - 3_600_000, clocks.StampOffsetMs([1, 2, 4], Self));
        time.NowMs -= 3_600_000;

        // Once voters' readings make a majority again, they rule.
        Hear(clocks, 4, -Hours2 + 7);
        Assert.Equal(-Hours2 + 7, clocks.StampOffsetMs([1, 2, 4], Self));

        // The last majority's time is kept for MajorityTimeUsableFor only.
        time.Advance((long)PeerClocks.MajorityTimeUsableFor.TotalMilliseconds + 1);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 4], Self));

        // And never when it is later than what the few readings say: stamping ahead is the harmful error.
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
        time.Advance((long)clocks.ReadingsUsableFor.TotalMilliseconds + 1);
        Assert.False(clocks.TryClusterOffsetVia(2, out _)); // too old
    }

    [Fact]
    public void AFollowerThatLosesItsLeadersWordKeepsTheTimeTheLeaderGave()
    {
        // This follower runs two hours ahead; its leader (2) is right and stamps by its own clock. The follower hears no
        // voter but its leader: once the stream to the leader breaks (or its readings age out, or an election starts),
        // its own clock alone would be the median, and its READONLY reads, which never judge earlier than an earlier
        // one there, would see every key with less than two hours left expired, until real time caught up.
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (2, -Hours2));
        clocks.Heard(2, time.NowMs - Hours2, time.NowMs, clusterOffsetMs: 0);
        Assert.True(clocks.TryClusterOffsetVia(2, out var viaLeader));
        Assert.Equal(-Hours2, viaLeader);

        clocks.Forget(2);
        time.Advance(500);
        Assert.Equal(-Hours2, clocks.StampOffsetMs([1, 2, 3], Self));

        // For MajorityTimeUsableFor, as a leader's carried time.
        time.Advance((long)PeerClocks.MajorityTimeUsableFor.TotalMilliseconds);
        Assert.Equal(0, clocks.StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void TheOffsetsOperatorsSeeAreOnlyReadingsThatStillCount()
    {
        // Peer 2 was removed (or stopped): its last reading no longer counts toward the cluster's time, and the metric
        // built from these offsets must not go on showing it.
        var time = new SettableTime(10_000_000);
        var clocks = Measured(time, (2, Hours2), (3, 5));
        time.Advance((long)clocks.ReadingsUsableFor.TotalMilliseconds);
        Hear(clocks, 3, 5);
        Assert.Equal([2UL, 3UL], clocks.Offsets.Keys.Order());

        time.Advance(1);
        Assert.Equal([3UL], clocks.Offsets.Keys);
        Assert.Equal(5, clocks.Offsets[3]);
    }

    [Fact]
    public void ANonVoterDoesNotCountItsOwnClockAsAVotersClock()
    {
        // Learner 4 runs two hours ahead, as voter 3 does; voter 2 is right. Counted as a voter's, the learner's own
        // clock would make the wrong clocks two of three and move the time two hours ahead: keys expire early.
        var time = new SettableTime(10_000_000);
        var learner = Measured(time, (2, -Hours2), (3, 0));
        Assert.Equal(-Hours2, learner.StampOffsetMs([1, 2, 3], 4)); // the lower median of voters 2 and 3

        // A voter in the same place is one of three clocks, two of them agreeing.
        Assert.Equal(0, Measured(time, (2, -Hours2), (3, 0)).StampOffsetMs([1, 2, 3], Self));
    }

    [Fact]
    public void ANonVoterWithTooFewReadingsIsNotMovedAheadByOneVoter()
    {
        // Learner 4's clock is right; the one voter it has read runs two hours ahead. Too few readings for a majority:
        // its own clock joins them, and the lower median keeps it from stamping ahead.
        var time = new SettableTime(10_000_000);
        var learner = Measured(time, (2, Hours2));
        Assert.Equal(0, learner.StampOffsetMs([1, 2, 3], 4));
        Assert.False(learner.HasHeardClusterTime);

        // And that was no majority's time to carry forward: once voter 2 is read back in line, its reading is what counts.
        learner.Forget(2);
        Hear(learner, 2, -5);
        Assert.Equal(-5, learner.StampOffsetMs([1, 2, 3], 4));
        Assert.Equal(0, new PeerClocks(time).StampOffsetMs([1, 2, 3], 4)); // nothing read: its own clock
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
            Hear(clocks, peer, offset);
        }

        return clocks;
    }

    /// <summary>A reading of <paramref name="peer"/>, running <paramref name="offsetMs"/> from this node, over an instant round trip.</summary>
    private static void Hear(PeerClocks clocks, ulong peer, long offsetMs)
    {
        var (sent, _, _) = clocks.ForMessageTo(peer);
        clocks.Heard(peer, sent + offsetMs, sent);
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
