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
/// A follower's read waits for the leader's answer to the read-index request it forwarded, matched by the request's
/// context. The leader's answer to a request made before the follower restarted can arrive after the restart (the
/// leader's stream queues messages while it reconnects); it carries the read index of that earlier moment, and writes
/// acknowledged since are not in it. It must not answer a read of the new process. Once answered, a read waits for the
/// follower to apply up to its read index, but no longer than its deadline.
/// </summary>
public sealed class ReadContextTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task AnAnswerToARequestOfThePreviousProcessDoesNotServeAReadOfTheRestartedOne()
    {
        var disk = MemoryStorage.Bootstrap(Membership.Of([1UL, 2UL, 3UL]));

        ulong before;
        await using (var first = Follower.Start(disk))
        {
            var unanswered = first.Driver.ExecuteAsync(Get("k"));
            before = await first.ForwardedContextAsync();
            Assert.False(unanswered.IsCompleted);
        }

        await using var restarted = Follower.Start(disk);
        var read = restarted.Driver.ExecuteAsync(Get("k"));
        var own = await restarted.ForwardedContextAsync();

        restarted.Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = before, Index = 0 });
        if (await Task.WhenAny(read, Task.Delay(300)) == read)
        {
            Assert.Fail($"served by the answer to the previous process's request: {await read}");
        }

        restarted.Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = own, Index = 0 });
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, (await read.WaitAsync(Patience)).ResultCase);
    }

    [Fact]
    public async Task AReadWhoseIndexThisNodeNeverAppliesFailsAtItsDeadline()
    {
        // The node's time stands still until the test moves it past the read's deadline, once the answer below is in: with a
        // deadline in real time, a test thread slow to post the answer let the read fail while still waiting for its
        // index (a CI run saw it at 200 ms; 2 s made it rarer, not impossible).
        var time = new ReadClockTests.SettableTime(1_750_000_000_000);
        await using var follower = Follower.Start(time);
        var read = follower.Driver.ExecuteAsync(Get("k"));
        var context = await follower.ForwardedContextAsync();

        // The leader answers with an index this follower will never reach: no entries follow, as when it is cut off.
        follower.Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = context, Index = 1_000 });
        // Posted messages and loop work are taken in order: a round after the one that took the answer in, it was handled.
        await follower.Driver.RunOnLoopAsync(_ => follower.Driver.RunOnLoopAsync(_ => 0)).Unwrap().WaitAsync(Patience);
        Assert.False(read.IsCompleted, "the read ended before its deadline");
        time.Advance((long)Follower.RequestTimeout.TotalMilliseconds + 1);
        var reply = await read.WaitAsync(Patience);
        Assert.Equal(Proto.Reply.ResultOneofCase.Failure, reply.ResultCase);
        Assert.Equal(Proto.FailureKind.Unavailable, reply.Failure.Kind);
        Assert.Contains("read index 1000", reply.Failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AStepOfTheWallClockNeitherFailsAPendingReadNorHoldsItPastItsTimeout()
    {
        // Deadlines were wall-clock times: an NTP step forward failed every request in flight at the next tick, and a step
        // back held them for as long as the step. They follow the monotonic clock now, which SettableTime moves only in
        // Advance.
        var time = new ReadClockTests.SettableTime(1_750_000_000_000);
        await using var follower = Follower.Start(time);
        var read = follower.Driver.ExecuteAsync(Get("k"));
        var context = await follower.ForwardedContextAsync();
        follower.Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = context, Index = 1_000 });

        time.NowMs += 3_600_000;
        await TicksAsync(follower, 3);
        Assert.False(read.IsCompleted, "a step of the wall clock forward failed a read before its timeout");

        time.NowMs -= 7_200_000;
        time.Advance((long)Follower.RequestTimeout.TotalMilliseconds + 1);
        var reply = await read.WaitAsync(Patience);
        Assert.Equal(Proto.FailureKind.Unavailable, reply.Failure.Kind);
        Assert.Contains("read index 1000", reply.Failure.Message, StringComparison.Ordinal);
    }

    private static async Task TicksAsync(Follower follower, int ticks)
    {
        var until = await follower.Driver.RunOnLoopAsync(_ => follower.Driver.TicksHandled + ticks).WaitAsync(Patience);
        await DriverWaits.UntilAsync(follower.Driver, _ => follower.Driver.TicksHandled >= until, $"{ticks} ticks");
    }

    [Fact]
    public async Task A_read_index_request_whose_answer_never_comes_is_forgotten_once_its_reads_time_out()
    {
        // The request or its answer was lost (a full send queue, a broken stream): the core would keep the request for as
        // long as the leader leads, one more with every such loss.
        var time = new ReadClockTests.SettableTime(1_750_000_000_000);
        await using var follower = Follower.Start(time);
        var read = follower.Driver.ExecuteAsync(Get("k"));
        await follower.ForwardedContextAsync();
        Assert.Equal(1, await follower.Driver.RunOnLoopAsync(raft => raft.ForwardedReadCount).WaitAsync(Patience));

        time.Advance((long)Follower.RequestTimeout.TotalMilliseconds + 1);
        Assert.Equal(Proto.FailureKind.Unavailable, (await read.WaitAsync(Patience)).Failure.Kind);
        Assert.Equal(0, await follower.Driver.RunOnLoopAsync(raft => raft.ForwardedReadCount).WaitAsync(Patience));
    }

    private static Proto.Command Get(string key) => new()
    {
        Id = 1,
        Consistency = Proto.ReadConsistency.Linearizable,
        Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(key) },
    };

    /// <summary>Node 2 of three, following node 1 (which exists only as the messages the test posts); it sends nowhere.</summary>
    internal sealed class Follower : IAsyncDisposable
    {
        private readonly NodeMetrics _metrics = new();
        private readonly PeerTransport _transport;
        private readonly ulong _initialContext;

        private Follower(MemoryStorage disk, TimeProvider time)
        {
            Driver = new RaftDriver(
                // Elections far off: the follower keeps its leader (and its pending reads) for the whole test.
                new RaftDriverSettings(2, new RaftOptions { Id = 2, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 100_000, 1_000, TimeSpan.FromHours(1), RequestTimeout),
                disk,
                new NoSnapshots(),
                new CacheStateMachine(new CacheStateMachineOptions()),
                new AddressBook(new Dictionary<ulong, string>()),
                (_, _) => { },
                time,
                _metrics,
                NullLogger<RaftDriver>.Instance);
            _initialContext = Driver.LastReadContext;
            _transport = new PeerTransport(2, "http://127.0.0.1:2", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
            Driver.Start(_transport);
            Post(new Message { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 1 });
        }

        /// <summary>How long a read waits, unless its sender says less.</summary>
        public static TimeSpan RequestTimeout { get; } = TimeSpan.FromMinutes(1);

        public RaftDriver Driver { get; }

        public static Follower Start(MemoryStorage disk) => new(disk, TimeProvider.System);

        /// <summary>Node 2 of three on a fresh disk, reading <paramref name="time"/>.</summary>
        public static Follower Start(TimeProvider time) => new(MemoryStorage.Bootstrap(Membership.Of([1UL, 2UL, 3UL])), time);

        public void Post(Message message) => Assert.True(((IRaftInbox)Driver).TryPost(message));

        /// <summary>The context of the read-index request the driver made for the read just sent (the first it made).</summary>
        public async Task<ulong> ForwardedContextAsync()
        {
            ulong context = 0;
            await Eventually.WaitAsync(async () => (context = await Driver.RunOnLoopAsync(_ => Driver.LastReadContext)) != _initialContext, Patience, "the read to become a read-index request");
            return context;
        }

        public async ValueTask DisposeAsync()
        {
            await Driver.DisposeAsync();
            await _transport.DisposeAsync();
            _metrics.Dispose();
        }
    }
}
