using Dcache.Node.Consensus;
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
        // One key a slice: KEYS over 200,000 keys takes 200,000 loop rounds, far longer than the tick that finds it overdue.
        await using var node = await SingleNode.StartAsync(time, requestTimeout: senderSaysHowLong ? TimeSpan.FromMinutes(10) : TimeSpan.FromSeconds(2), longReadSliceKeys: 1);
        await LoadAsync(node.Driver, 200_000);

        var keys = new Proto.Command { Id = 1, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };
        if (senderSaysHowLong)
        {
            keys.TimeoutMs = 1_500;
        }

        var reply = node.Driver.ExecuteAsync(keys);
        time.Advance(3_000);

        var answer = await reply.WaitAsync(Patience);
        Assert.True(answer.ResultCase == Proto.Reply.ResultOneofCase.Failure, $"served in full after its deadline: {answer.Array?.Items.Count} keys");
        Assert.Equal(Proto.FailureKind.Unavailable, answer.Failure.Kind);
        Assert.Equal(0, await node.Driver.RunOnLoopAsync(_ => node.Driver.Cache.WalkCount).WaitAsync(Patience));
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
