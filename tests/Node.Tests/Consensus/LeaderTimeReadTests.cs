using System.Buffers;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A follower's linearizable read judges expiry by the leader's time, carried in the leader's answer to its read-index
/// request, not by its own estimate of the cluster's time (the leader's clock plus the leader's correction), which is off
/// the leader's by the estimate's error. Otherwise a key a read on the leader saw expired can be served by a later read
/// on a follower whose estimate is behind, and a key a read on a follower saw expired (its estimate ahead) can be served
/// by a later read on the leader. The estimate's error is played here by a clock reading the test hands the follower.
/// </summary>
public sealed class LeaderTimeReadTests
{
    private const long Start = 1_750_000_000_000;
    private const long KeyTtlMs = 10_000;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task AFollowerWhoseEstimateIsAheadServesAKeyTheLeadersTimeSaysIsAlive()
    {
        // By its estimate the key expired 50 s ago; by the leader's time it has 9 s left.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 60_000);
        var read = await follower.ReadAsync(Get("k"), leaderTimeMs: Start + 1_000);
        Assert.Equal("v", read.Bulk.ToStringUtf8());
        var ttl = await follower.ReadAsync(Pttl("k"), leaderTimeMs: Start + 1_000);
        Assert.Equal(KeyTtlMs - 1_000, ttl.Integer);
    }

    [Fact]
    public async Task AFollowerWhoseEstimateIsBehindDoesNotServeAKeyTheLeaderSawExpired()
    {
        // The leader read the key as expired at its time Start + 15 s; its later answer carries a time no earlier. By
        // its own estimate the follower would still see the key alive for a minute.
        await using var follower = await Follower.StartAsync(estimateAheadMs: -60_000);
        var read = await follower.ReadAsync(Get("k"), leaderTimeMs: Start + 15_000);
        Assert.True(read.ResultCase == Proto.Reply.ResultOneofCase.Nil, $"served a key the leader's time says expired: {read}");
        var ttl = await follower.ReadAsync(Pttl("k"), leaderTimeMs: Start + 15_000);
        Assert.Equal(-2, ttl.Integer);
    }

    [Fact]
    public async Task AFollowerNeverJudgesEarlierThanAnEarlierLinearizableReadThere()
    {
        // A later answer with an earlier time (an earlier leader's timeline can be ahead of its successor's by the error
        // of their estimates) does not bring back a key a read here saw expired.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 0);
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, (await follower.ReadAsync(Get("k"), leaderTimeMs: Start + 15_000)).ResultCase);
        var again = await follower.ReadAsync(Get("k"), leaderTimeMs: Start + 1_000);
        Assert.True(again.ResultCase == Proto.Reply.ResultOneofCase.Nil, $"a key read as expired is served again: {again}");
    }

    [Fact]
    public async Task AnAnswerWithoutTheLeadersTimeFallsBackToTheFollowersEstimate()
    {
        // A leader whose build predates the field: the follower reads by its own estimate, as before.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 60_000);
        var read = await follower.ReadAsync(Get("k"), leaderTimeMs: 0);
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, read.ResultCase);
    }

    [Fact]
    public async Task ALocalReadByAnEstimateAheadDoesNotMoveTheLinearizableReadsTime()
    {
        await using var follower = await Follower.StartAsync(estimateAheadMs: 60_000);
        var local = await follower.Driver.ExecuteAsync(Get("k", Proto.ReadConsistency.Local)).WaitAsync(Patience);
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, local.ResultCase);

        var read = await follower.ReadAsync(Get("k"), leaderTimeMs: Start + 1_000);
        Assert.Equal("v", read.Bulk.ToStringUtf8());
    }

    [Fact]
    public async Task ALocalReadOnANodeThatBecameLeaderNeverJudgesEarlierThanAnEarlierLocalReadThere()
    {
        // As a follower its estimate (by way of its leader, whose clock is a minute ahead) says the key expired; as
        // leader its estimate is the lower median of its voters' offsets, its own clock. A key a LOCAL read on this node
        // saw expired must stay expired for later LOCAL reads on it (protocol.md), whatever its role.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 60_000);
        var before = await follower.Driver.ExecuteAsync(Get("k", Proto.ReadConsistency.Local)).WaitAsync(Patience);
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, before.ResultCase);

        await follower.BecomeLeaderAsync();
        var after = await follower.Driver.ExecuteAsync(Get("k", Proto.ReadConsistency.Local)).WaitAsync(Patience);
        Assert.True(after.ResultCase == Proto.Reply.ResultOneofCase.Nil, $"a key a LOCAL read here saw expired is served again: {after}");
    }

    [Fact]
    public async Task AFollowerWhoseClockIsAheadKeepsTheLeadersTimeForLocalReadsOnceTheLeaderFallsSilent()
    {
        // The follower's own clock is a minute ahead of its leader's, the cluster's time: by that time the key has 10 s
        // left. The leader's process dies: the stream to it breaks (the transport forgets its readings) and the follower
        // campaigns. Its own clock alone would say the key expired 50 s ago, and since a LOCAL read here never judges
        // earlier than an earlier one, the key would stay expired for its READONLY reads until real time caught up.
        await using var follower = await Follower.StartAsync(estimateAheadMs: -60_000, ownClockMs: Start + 60_000);
        Assert.Equal(KeyTtlMs, (await follower.Driver.ExecuteAsync(Pttl("k", Proto.ReadConsistency.Local)).WaitAsync(Patience)).Integer);

        follower.Driver.Clocks.Forget(1);
        await follower.CampaignAsync();
        var ttl = await follower.Driver.ExecuteAsync(Pttl("k", Proto.ReadConsistency.Local)).WaitAsync(Patience);
        Assert.Equal(KeyTtlMs, ttl.Integer);
    }

    [Fact]
    public async Task AFollowerThatHasNotYetHeardTheClustersTimeReadsLocallyByTheLastStampNotItsOwnClock()
    {
        // Just restarted on a host whose clock is an hour ahead, it has applied the leader's write but measured no clock
        // yet: by its own clock the key expired 50 min ago, and judged so once, it would stay expired for READONLY reads
        // here (a LOCAL read never judges earlier than one before it) until real time caught up.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 0, ownClockMs: Start + 3_600_000, leaderHeard: false);
        Assert.Equal(KeyTtlMs, (await follower.Driver.ExecuteAsync(Pttl("k", Proto.ReadConsistency.Local)).WaitAsync(Patience)).Integer);

        // The leader's clock and correction are heard (its clock is the cluster's time): 200 ms later on the monotonic
        // clock, the follower reads by the leader's time.
        follower.HearLeader(leaderClockMs: Start);
        follower.Time.Advance(TimeSpan.FromMilliseconds(200));
        Assert.Equal(KeyTtlMs - 200, (await follower.Driver.ExecuteAsync(Pttl("k", Proto.ReadConsistency.Local)).WaitAsync(Patience)).Integer);
    }

    [Fact]
    public async Task AFollowerThatHasNotYetHeardTheClustersTimeDoesNotTakeItsOwnClockForAnOldLeadersReadTime()
    {
        // A leader on a build older than read_time_ms answers without its time; the follower then reads by its
        // estimate, which before it has heard the cluster's time is its own clock, an hour ahead: not that, but the
        // last stamp it applied.
        await using var follower = await Follower.StartAsync(estimateAheadMs: 0, ownClockMs: Start + 3_600_000, leaderHeard: false);
        Assert.Equal(KeyTtlMs, (await follower.ReadAsync(Pttl("k"), leaderTimeMs: 0)).Integer);
        Assert.Equal(KeyTtlMs, (await follower.Driver.ExecuteAsync(Pttl("k", Proto.ReadConsistency.Local)).WaitAsync(Patience)).Integer);
    }

    private static ulong s_nextId;

    private static Proto.Command Get(string key, Proto.ReadConsistency consistency = Proto.ReadConsistency.Linearizable) => new()
    {
        Id = Interlocked.Increment(ref s_nextId),
        Consistency = consistency,
        Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(key) },
    };

    private static Proto.Command Pttl(string key, Proto.ReadConsistency consistency = Proto.ReadConsistency.Linearizable) => new()
    {
        Id = Interlocked.Increment(ref s_nextId),
        Consistency = consistency,
        Ttl = new Proto.TtlRequest { Key = ByteString.CopyFromUtf8(key), Milliseconds = true },
    };

    /// <summary>
    /// Node 2 of three, following node 1 (which exists only as the messages the test posts); it sends nowhere. Its wall
    /// clock reads <see cref="Start"/> unless given; it has applied one write the leader stamped at <see cref="Start"/>:
    /// key k, expiring <see cref="KeyTtlMs"/> later; and it estimates the cluster's time as its own clock plus the given
    /// error.
    /// </summary>
    private sealed class Follower : IAsyncDisposable
    {
        private const ulong WriteIndex = 4; // after the three founding membership entries
        private readonly NodeMetrics _metrics = new();
        private readonly PeerTransport _transport;
        private ulong _lastContext;

        private readonly long _ownClockMs;

        private Follower(long estimateAheadMs, long ownClockMs, bool leaderHeard)
        {
            _ownClockMs = ownClockMs;
            Time = new FixedTime(ownClockMs);
            Driver = new RaftDriver(
                // Elections far off: the follower keeps its leader (and its pending reads) for the whole test.
                new RaftDriverSettings(2, new RaftOptions { Id = 2, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 100_000, 1_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1)),
                MemoryStorage.Bootstrap(Membership.Of([1UL, 2UL, 3UL])),
                new NoSnapshots(),
                new CacheStateMachine(new CacheStateMachineOptions()),
                new AddressBook(new Dictionary<ulong, string>()),
                (_, _) => { },
                Time,
                _metrics,
                NullLogger<RaftDriver>.Instance);
            _lastContext = Driver.LastReadContext;
            // The follower's estimate of the cluster's time is its own clock plus the error.
            if (leaderHeard)
            {
                HearLeader(ownClockMs + estimateAheadMs);
            }

            _transport = new PeerTransport(2, "http://127.0.0.1:2", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
            Driver.Start(_transport);
        }

        public RaftDriver Driver { get; }

        public FixedTime Time { get; }

        public static async Task<Follower> StartAsync(long estimateAheadMs, long ownClockMs = Start, bool leaderHeard = true)
        {
            var follower = new Follower(estimateAheadMs, ownClockMs, leaderHeard);
            var buffer = new ArrayBufferWriter<byte>();
            WriteEncoder.Encode(new Proto.Command
            {
                Id = 1,
                Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v"), TtlMs = KeyTtlMs },
            }, Start, buffer);
            var data = buffer.WrittenSpan.ToArray();
            CacheCommand.SetFormatVersion(data, CacheCommand.FormatVersion);
            follower.Post(new Message
            {
                Type = MessageType.Append, From = 1, To = 2, Term = 1, Index = WriteIndex - 1, LogTerm = 1, Commit = WriteIndex,
                Entries = [new Entry(WriteIndex, 1, EntryType.Normal, data)],
            });
            await Eventually.WaitAsync(
                () => follower.Driver.Status.AppliedIndex >= WriteIndex && follower.Driver.Status.LeaderId == 1,
                Patience,
                "the follower to apply the leader's write");

            return follower;
        }

        /// <summary>A linearizable read, answered by the leader with read index <see cref="WriteIndex"/> and <paramref name="leaderTimeMs"/> (0: none).</summary>
        public async Task<Proto.Reply> ReadAsync(Proto.Command command, long leaderTimeMs)
        {
            var read = Driver.ExecuteAsync(command);
            var context = await NextForwardedContextAsync();
            Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = context, Index = WriteIndex }, leaderTimeMs);
            return await read.WaitAsync(Patience);
        }

        /// <summary>
        /// The leader's clock reading as the follower measures it (no time on the wire, as the monotonic clock now
        /// stands), with a correction of 0: the follower's estimate of the cluster's time becomes the leader's clock.
        /// </summary>
        public void HearLeader(long leaderClockMs) =>
            ((IRaftInbox)Driver).PeerClockHeard(1, leaderClockMs, echoMs: _ownClockMs, echoHeldMs: 0, clusterOffsetMs: 0);

        /// <summary>Starts an election (its pre-vote): the node stops following.</summary>
        public async Task CampaignAsync()
        {
            await Driver.RunOnLoopAsync(raft =>
            {
                raft.Campaign();
                return raft.Term;
            });
            await Eventually.WaitAsync(() => Driver.Status.Role != Role.Follower, Patience, "the node to campaign");
        }

        /// <summary>Wins an election at term 2 with node 1's vote (pre-vote, then vote).</summary>
        public async Task BecomeLeaderAsync()
        {
            await CampaignAsync();
            Post(new Message { Type = MessageType.PreVoteResponse, From = 1, To = 2, Term = 2 });
            Post(new Message { Type = MessageType.VoteResponse, From = 1, To = 2, Term = 2 });
            await Eventually.WaitAsync(() => Driver.Status.Role == Role.Leader, Patience, "the node to become leader");
        }

        private void Post(Message message, long readTimeMs = 0) => Assert.True(((IRaftInbox)Driver).TryPost(message, readTimeMs));

        private async Task<ulong> NextForwardedContextAsync()
        {
            ulong context = 0;
            await Eventually.WaitAsync(async () => (context = await Driver.RunOnLoopAsync(_ => Driver.LastReadContext)) != _lastContext, Patience, "the read to become a read-index request");
            _lastContext = context;
            return context;
        }

        public async ValueTask DisposeAsync()
        {
            await Driver.DisposeAsync();
            await _transport.DisposeAsync();
            _metrics.Dispose();
        }
    }

    /// <summary>
    /// A wall clock that stands still, and a monotonic clock that advances only when told: offsets measured once stay,
    /// and a peer's clock moves on by what the monotonic clock has advanced since it was read.
    /// </summary>
    private sealed class FixedTime(long nowMs) : TimeProvider
    {
        private long _timestampMs;

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.FromUnixTimeMilliseconds(nowMs);

        public override long TimestampFrequency => 1000;

        public override long GetTimestamp() => Volatile.Read(ref _timestampMs);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _timestampMs, (long)by.TotalMilliseconds);
    }
}
