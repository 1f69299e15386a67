using System.Threading.Channels;
using Dcache.Node.Consensus;
using Dcache.Node.Services;
using Grpc.Core;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;
using static Dcache.Node.Tests.Consensus.ReadClockTests;
using Follower = Dcache.Node.Tests.Consensus.ReadContextTests.Follower;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A read nobody waits for any more is dropped on the node, a long one in the middle of its slices: at the node's
/// request timeout, or earlier at the time its sender said it waits (a gateway's attempt).
/// </summary>
public sealed class LongReadDeadlineTests
{
    private const long Start = 1_750_000_000_000;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_long_read_still_running_at_its_deadline_is_dropped_and_lets_go_of_its_walk(bool senderSaysHowLong)
    {
        var time = new SettableTime(Start);
        // One key a slice: KEYS over 200,000 keys takes 200,000 loop rounds.
        await using var node = await SingleNode.StartAsync(time, requestTimeout: senderSaysHowLong ? TimeSpan.FromMinutes(10) : TimeSpan.FromSeconds(2), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);

        var keys = new Proto.Command { Id = 1, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };
        if (senderSaysHowLong)
        {
            keys.TimeoutMs = 1_500;
        }

        var reply = node.Driver.ExecuteAsync(keys);
        // The deadline passes while the loop is held in the round the walk started in: it cannot finish first.
        await using var held = await HeldWalk.StartAsync(node.Driver);
        time.Advance(3_000);
        Assert.Equal(0, await held.ReleaseAndCountWalksAsync());

        var answer = await reply.WaitAsync(Patience);
        Assert.True(answer.ResultCase == Proto.Reply.ResultOneofCase.Failure, $"served in full after its deadline: {answer.Array?.Items.Count} keys");
        Assert.Equal(Proto.FailureKind.Unavailable, answer.Failure.Kind);
    }

    [Fact]
    public async Task A_read_whose_sender_waits_less_does_not_shorten_the_wait_of_the_reads_sharing_its_read_index()
    {
        // A follower whose leader exists only as the messages posted: its reads wait for the read index they asked for.
        var time = new SettableTime(Start);
        await using var follower = Follower.Start(time);
        var impatient = Get("a", timeoutMs: 500);
        var patient = Get("b", timeoutMs: 0);
        var first = follower.Driver.ExecuteAsync(impatient);
        var second = follower.Driver.ExecuteAsync(patient);
        await follower.ForwardedContextAsync();

        time.Advance(1_000);
        var failed = await first.WaitAsync(Patience);
        Assert.Equal(Proto.FailureKind.Unavailable, failed.Failure?.Kind);
        Assert.False(second.IsCompleted, "the patient read ended with the impatient one");

        var context = await follower.Driver.RunOnLoopAsync(_ => follower.Driver.LastReadContext).WaitAsync(Patience);
        follower.Post(new Message { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 1, Context = context, Index = 0 });
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, (await second.WaitAsync(Patience)).ResultCase);
    }

    [Fact]
    public async Task A_long_read_whose_command_stream_closes_is_dropped()
    {
        // Deadlines far off (the node's time stands still): only the stream's end can stop the read.
        await using var node = await SingleNode.StartAsync(new SettableTime(Start), requestTimeout: TimeSpan.FromMinutes(10), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);
        // LOCAL: it starts as soon as the loop takes it in, with no read index to wait for.
        var keysAll = new Proto.Command { Id = 1, Consistency = Proto.ReadConsistency.Local, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };

        using var call = new CancellationTokenSource();
        var requests = new BatchReader();
        var serving = CacheService.ServeStreamAsync(node.Driver, 1 << 24, requests, new ReplyWriter(), CancellationToken.None, call.Token);
        requests.Send(keysAll.Clone());

        // The loop is held right after it took the KEYS in, while the gateway hangs up. Once released, it goes on with
        // that round, then takes in the inputs posted from there: more than a round drains (4,096), so the last is
        // taken in a later round, after which the read, a key a round and 200,000 to go, is still walking unless dropped.
        await using var held = await HeldWalk.StartAsync(node.Driver);

        await call.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => serving.WaitAsync(Patience));
        Assert.Equal(0, await held.ReleaseAndCountWalksAsync());
    }

    [Fact]
    public async Task A_command_stream_whose_connection_breaks_ends_quietly_and_drops_its_long_read()
    {
        await using var node = await SingleNode.StartAsync(new SettableTime(Start), requestTimeout: TimeSpan.FromMinutes(10), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);
        var keysAll = new Proto.Command { Id = 1, Consistency = Proto.ReadConsistency.Local, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };

        var requests = new BatchReader();
        var serving = CacheService.ServeStreamAsync(node.Driver, 1 << 24, requests, new ReplyWriter(), CancellationToken.None, CancellationToken.None);
        requests.Send(keysAll.Clone());
        await using var held = await HeldWalk.StartAsync(node.Driver);

        // What Kestrel reports when the gateway's socket is reset: the stream ends, and gRPC would log any exception
        // that escapes the method as a failure of this node's.
        requests.Break(new IOException("The request stream was aborted."));
        await serving.WaitAsync(Patience);
        Assert.Equal(0, await held.ReleaseAndCountWalksAsync());
    }

    [Fact]
    public async Task A_long_read_of_a_unary_call_is_dropped_at_the_calls_deadline()
    {
        var time = new SettableTime(Start);
        await using var node = await SingleNode.StartAsync(time, requestTimeout: TimeSpan.FromMinutes(10), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);

        var keys = new Proto.Command { Id = 1, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };
        var reply = CacheService.ExecuteOneAsync(node.Driver, keys, DateTime.UtcNow.AddSeconds(1.5), CancellationToken.None);
        await using var held = await HeldWalk.StartAsync(node.Driver);
        time.Advance(3_000);
        Assert.Equal(0, await held.ReleaseAndCountWalksAsync());

        var answer = await reply.WaitAsync(Patience);
        Assert.True(answer.ResultCase == Proto.Reply.ResultOneofCase.Failure, $"served in full after the call's deadline: {answer.Array?.Items.Count} keys");
        Assert.Equal(Proto.FailureKind.Unavailable, answer.Failure.Kind);
    }

    [Fact]
    public async Task A_long_read_of_a_unary_call_its_caller_cancels_ends_the_call_and_stops_walking()
    {
        // No deadline, and the node's time stands still: only the call's end can stop the read.
        await using var node = await SingleNode.StartAsync(new SettableTime(Start), requestTimeout: TimeSpan.FromMinutes(10), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);
        var keys = new Proto.Command { Id = 1, Consistency = Proto.ReadConsistency.Local, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };

        using var call = new CancellationTokenSource();
        var reply = CacheService.ExecuteOneAsync(node.Driver, keys, DateTime.MaxValue, call.Token);
        // Held in the round the walk started in, the loop cannot finish it before the call is cancelled.
        await using var held = await HeldWalk.StartAsync(node.Driver);

        await call.CancelAsync();
        var ended = await Assert.ThrowsAsync<RpcException>(() => reply.WaitAsync(Patience));
        Assert.Equal(StatusCode.Cancelled, ended.StatusCode);
        Assert.Equal(0, await held.ReleaseAndCountWalksAsync());
    }

    [Fact]
    public async Task A_write_of_a_unary_call_that_ends_first_is_reported_as_possibly_applied_and_applies()
    {
        await using var node = await SingleNode.StartAsync(new SettableTime(Start));
        // The loop is held: the write waits in its inputs while its call ends.
        using var hold = new ManualResetEventSlim();
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var holding = node.Driver.RunOnLoopAsync(_ =>
        {
            held.TrySetResult();
            return hold.Wait(Patience);
        });
        await held.Task.WaitAsync(Patience);

        using var call = new CancellationTokenSource();
        var set = new Proto.Command { Id = 1, Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v") } };
        var reply = CacheService.ExecuteOneAsync(node.Driver, set, DateTime.MaxValue, call.Token);
        await call.CancelAsync();
        var ended = await Assert.ThrowsAsync<RpcException>(() => reply.WaitAsync(Patience));
        hold.Set();
        Assert.True(await holding.WaitAsync(Patience));

        Assert.Equal(StatusCode.Cancelled, ended.StatusCode);
        Assert.Contains("may still apply", ended.Status.Detail, StringComparison.Ordinal);
        var get = await node.Driver.ExecuteAsync(new Proto.Command { Id = 2, Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8("k") } }).WaitAsync(Patience);
        Assert.Equal("v", get.Bulk.ToStringUtf8());
    }

    /// <summary>
    /// The node's loop held in the round a walk started in (one key of many walked), so that a test can end the read's
    /// call before the walk could finish, however slowly the test's thread runs.
    /// </summary>
    private sealed class HeldWalk : IAsyncDisposable
    {
        // Posted from the held round: after 5,000 more rounds a walk still on (a key a round) would be far from its end.
        private const int RoundsAfterRelease = 5_000;
        private readonly ManualResetEventSlim _release = new();
        private Task<int> _holding = Task.FromResult(0);
        private Task<int>? _walksLater;

        public static async Task<HeldWalk> StartAsync(RaftDriver driver)
        {
            var held = new HeldWalk();
            var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var until = DateTime.UtcNow + Patience;
            while (true)
            {
                await Task.WhenAny(held._holding, started.Task).WaitAsync(Patience);
                if (started.Task.IsCompleted)
                {
                    return held;
                }

                Assert.True(DateTime.UtcNow < until, "the walk never started");
                held._holding = driver.RunOnLoopAsync(_ =>
                {
                    var walks = driver.Cache.WalkCount;
                    if (walks == 1)
                    {
                        started.TrySetResult();
                        held._release.Wait(Patience);
                        held._walksLater = WalksAfter(driver, RoundsAfterRelease);
                    }

                    return walks;
                });
            }
        }

        /// <summary>Lets the loop go on and counts the walks still on some thousand rounds later.</summary>
        public async Task<int> ReleaseAndCountWalksAsync()
        {
            _release.Set();
            await _holding.WaitAsync(Patience);
            return await _walksLater!.WaitAsync(Patience);
        }

        public async ValueTask DisposeAsync()
        {
            _release.Set();
            await ((Task)_holding).WaitAsync(Patience).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            _release.Dispose();
        }

        private static Task<int> WalksAfter(RaftDriver driver, int rounds) => rounds == 0
            ? driver.RunOnLoopAsync(_ => driver.Cache.WalkCount)
            : driver.RunOnLoopAsync(_ => WalksAfter(driver, rounds - 1)).Unwrap();
    }

    /// <summary>A gateway's side of the command stream: batches sent by the test, until the call is cancelled.</summary>
    private sealed class BatchReader : IAsyncStreamReader<Proto.CommandBatch>
    {
        private readonly Channel<Proto.CommandBatch> _batches = Channel.CreateUnbounded<Proto.CommandBatch>();
        private Exception? _failure;

        public Proto.CommandBatch Current { get; private set; } = new();

        public void Send(Proto.Command command) => _batches.Writer.TryWrite(new Proto.CommandBatch { Commands = { command } });

        /// <summary>The connection breaks: the next read of the stream fails with <paramref name="failure"/>.</summary>
        public void Break(Exception failure)
        {
            _failure = failure;
            _batches.Writer.TryComplete();
        }

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (!await _batches.Reader.WaitToReadAsync(cancellationToken))
            {
                throw _failure ?? new InvalidOperationException("the test ended the stream without a failure");
            }

            Current = await _batches.Reader.ReadAsync(cancellationToken);
            return true;
        }
    }

    private sealed class ReplyWriter : IServerStreamWriter<Proto.ReplyBatch>
    {
        public WriteOptions? WriteOptions { get; set; }

        public Task WriteAsync(Proto.ReplyBatch message) => Task.CompletedTask;
    }

    private static Proto.Command Get(string key, uint timeoutMs) => new()
    {
        Id = 10,
        TimeoutMs = timeoutMs,
        Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(key) },
    };

    private static async Task LoadAsync(RaftDriver driver, int keys)
    {
        ulong id = 100;
        foreach (var chunk in Enumerable.Range(0, keys).Chunk(5_000))
        {
            var mset = new Proto.MSetRequest();
            foreach (var i in chunk)
            {
                mset.Keys.Add(ByteString.CopyFromUtf8("key:" + i));
                mset.Values.Add(ByteString.CopyFromUtf8("v"));
            }

            var reply = await driver.ExecuteAsync(new Proto.Command { Id = ++id, Mset = mset }).WaitAsync(Patience);
            Assert.Equal(Proto.Reply.ResultOneofCase.Ok, reply.ResultCase);
        }
    }
}
