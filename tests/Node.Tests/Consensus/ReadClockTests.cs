using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// The time reads judge expiry by. The cluster's time a node computes can go back: every recomputation of its voters'
/// offsets (or of the leader's correction) is off by up to half a round trip, differently each time, and a stepped wall
/// clock moves it until peers' readings correct it (on a single node, never). The state machine's clock, which writes
/// judge by, never goes back. A read must judge by neither less than the state machine's clock nor less than the time
/// an earlier read on the node used: otherwise a key comes back to life after a read saw it expired, or a TTL goes up.
/// </summary>
public sealed class ReadClockTests
{
    private const long Start = 1_750_000_000_000;

    [Fact]
    public async Task AKeyAReadSawExpiredIsNotServedAgainWhenTheNodesTimeGoesBack()
    {
        var time = new SettableTime(Start);
        await using var node = await SingleNode.StartAsync(time);
        Assert.True(IsOk(await node.Driver.ExecuteAsync(Set("k", "v", ttlMs: 1_000))));

        time.Advance(1_500);
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, (await node.Driver.ExecuteAsync(Get("k"))).ResultCase);

        time.NowMs -= 1_000; // the node's time goes back below the key's expiry
        var again = await node.Driver.ExecuteAsync(Get("k"));
        Assert.True(again.ResultCase == Proto.Reply.ResultOneofCase.Nil, $"a key read as expired is served again: {again}");
        var ttl = await node.Driver.ExecuteAsync(Ttl("k"));
        Assert.Equal(-2, ttl.Integer);
    }

    [Fact]
    public async Task ATtlIsNeverReadLongerThanTheTtlJustSet()
    {
        var time = new SettableTime(Start);
        await using var node = await SingleNode.StartAsync(time);
        Assert.True(IsOk(await node.Driver.ExecuteAsync(Set("a", "1", ttlMs: 60_000))));

        // The node's time goes back; its stamps stand still (never earlier than the state machine's clock), so the next
        // key expires a second after the state machine's time, which is two seconds after the node's.
        time.NowMs -= 2_000;
        Assert.True(IsOk(await node.Driver.ExecuteAsync(Set("b", "2", ttlMs: 1_000))));
        var ttl = await node.Driver.ExecuteAsync(Ttl("b"));
        Assert.InRange(ttl.Integer, 0, 1_000);
    }

    private static bool IsOk(Proto.Reply reply) => reply.ResultCase != Proto.Reply.ResultOneofCase.Failure && reply.Error.Length == 0;

    private static ulong s_nextId;

    private static Proto.Command Set(string key, string value, long ttlMs) => new()
    {
        Id = ++s_nextId,
        Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value), TtlMs = ttlMs },
    };

    private static Proto.Command Get(string key) => new()
    {
        Id = ++s_nextId,
        Consistency = Proto.ReadConsistency.Linearizable,
        Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(key) },
    };

    private static Proto.Command Ttl(string key) => new()
    {
        Id = ++s_nextId,
        Consistency = Proto.ReadConsistency.Linearizable,
        Ttl = new Proto.TtlRequest { Key = ByteString.CopyFromUtf8(key), Milliseconds = true },
    };

    /// <summary>A one-voter node on memory storage: it leads at once and sends nothing.</summary>
    internal sealed class SingleNode : IAsyncDisposable
    {
        private readonly NodeMetrics _metrics = new();
        private PeerTransport? _transport;

        private SingleNode(TimeProvider time, TimeSpan requestTimeout, int longReadSliceKeys)
        {
            var membership = Membership.Of([1UL], contexts: [new KeyValuePair<ulong, string>(1, "http://127.0.0.1:1")]);
            Driver = new RaftDriver(
                new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 100_000, 1_000, TimeSpan.FromHours(1), requestTimeout)
                {
                    LongReadSliceKeys = longReadSliceKeys,
                },
                MemoryStorage.Bootstrap(membership),
                new NoSnapshots(),
                new CacheStateMachine(new CacheStateMachineOptions()),
                new AddressBook(new Dictionary<ulong, string> { [1] = "http://127.0.0.1:1" }),
                (_, _) => { },
                time,
                _metrics,
                NullLogger<RaftDriver>.Instance);
        }

        public RaftDriver Driver { get; }

        public static async Task<SingleNode> StartAsync(TimeProvider time, TimeSpan? requestTimeout = null, int longReadSliceKeys = 4096)
        {
            var node = new SingleNode(time, requestTimeout ?? TimeSpan.FromSeconds(10), longReadSliceKeys);
            node._transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, node.Driver.Clocks, node.Driver, NullLogger<PeerTransport>.Instance);
            node.Driver.Start(node._transport);
            await Eventually.WaitAsync(
                () => node.Driver.Status.Role == Role.Leader && node.Driver.Status.AppliedIndex >= node.Driver.Status.CommitIndex,
                TimeSpan.FromSeconds(10),
                "the single node to take leadership");

            return node;
        }

        public async ValueTask DisposeAsync()
        {
            await Driver.DisposeAsync();
            if (_transport is not null)
            {
                await _transport.DisposeAsync();
            }

            _metrics.Dispose();
        }
    }

    /// <summary>A wall clock that can be stepped, and a monotonic clock that only advances (with <see cref="Advance"/>).</summary>
    internal sealed class SettableTime(long nowMs) : TimeProvider
    {
        private long _monotonicMs;

        public long NowMs
        {
            get => Interlocked.Read(ref nowMs);
            set => Interlocked.Exchange(ref nowMs, value);
        }

        public void Advance(long ms)
        {
            Interlocked.Add(ref nowMs, ms);
            Interlocked.Add(ref _monotonicMs, ms);
        }

        public override DateTimeOffset GetUtcNow() => DateTimeOffset.FromUnixTimeMilliseconds(NowMs);

        public override long TimestampFrequency => 1000;

        public override long GetTimestamp() => Interlocked.Read(ref _monotonicMs);
    }
}
