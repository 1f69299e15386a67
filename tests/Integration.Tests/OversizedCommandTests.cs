using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// Commands and replies near the gRPC message limit (here 1 MiB on nodes and gateway): a command too large to
/// replicate, or a reply too large to send, fails alone with a clear error; batches are cut to fit; nothing else on the
/// same stream is disturbed, and the cluster keeps committing.
/// </summary>
public sealed class OversizedCommandTests(ITestOutputHelper output)
{
    private const int MaxMessageBytes = 1024 * 1024;

    [Fact]
    public async Task OversizedCommandsAndRepliesFailAloneWhileTheirNeighboursAndTheClusterCarryOn()
    {
        await using var cluster = new LocalCluster(output, settings: new Dictionary<string, string> { ["MaxMessageBytes"] = $"{MaxMessageBytes}" });
        await cluster.StartAsync();
        await cluster.StartGatewayAsync(new Dictionary<string, string> { ["Cluster:MaxMessageBytes"] = $"{MaxMessageBytes}" });
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(20));

        // Straight to the leader (as a tool could): the message fits, but its log entry could never reach a follower.
        var direct = await cluster.ExecuteAsync(leader, Commands.Set("direct", new string('d', MaxMessageBytes - 20_000)));
        Assert.StartsWith("ERR command too large", direct.Error, StringComparison.Ordinal);
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("after-direct", "committed"))).Ok);

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort},syncTimeout=10000,asyncTimeout=10000,allowAdmin=true");
        var db = redis.GetDatabase();

        // One pipeline: a command no message could carry between two small ones, then eight that fit one by one but
        // not together (2.4 MB): the gateway cuts them into several messages.
        var batch = db.CreateBatch();
        var before = batch.StringSetAsync("before", "1");
        var huge = batch.StringSetAsync("huge", new string('h', MaxMessageBytes + 10));
        var after = batch.StringSetAsync("after", "2");
        var parts = Enumerable.Range(0, 8).Select(i => batch.StringSetAsync($"part-{i}", new string((char)('a' + i), 300_000))).ToArray();
        batch.Execute();

        Assert.True(await before);
        var refused = await Assert.ThrowsAsync<RedisServerException>(() => huge);
        Assert.StartsWith("ERR command too large", refused.Message, StringComparison.Ordinal);
        Assert.True(await after);
        foreach (var part in parts)
        {
            Assert.True(await part);
        }

        Assert.False(await db.KeyExistsAsync("huge"));
        Assert.Equal(300_000, ((string?)await db.StringGetAsync("part-7"))!.Length);

        // A reply the node cannot send in one message fails alone; the same keys read in smaller pieces work.
        var tooLarge = await Assert.ThrowsAsync<RedisServerException>(() => db.StringGetAsync([.. Enumerable.Range(0, 8).Select(i => (RedisKey)$"part-{i}")]));
        Assert.StartsWith("ERR reply too large", tooLarge.Message, StringComparison.Ordinal);
        var halves = await db.StringGetAsync(["part-0", "part-1"]);
        Assert.All(halves, value => Assert.Equal(300_000, ((string?)value)!.Length));

        // KEYS (an admin command to StackExchange.Redis, hence allowAdmin) is held to the same limit: long key names
        // that fit one by one but not in one reply.
        foreach (var i in Enumerable.Range(0, 4))
        {
            Assert.True(await db.StringSetAsync($"long-{i}-" + new string('n', 300_000), "v"));
        }

        var keysTooLarge = await Assert.ThrowsAsync<RedisServerException>(() => db.ExecuteAsync("KEYS", "long-*"));
        Assert.StartsWith("ERR reply too large", keysTooLarge.Message, StringComparison.Ordinal);
        Assert.Single((RedisResult[])(await db.ExecuteAsync("KEYS", "long-0-*"))!);
        Assert.Equal("committed", (await cluster.ExecuteAsync(leader, Commands.Get("after-direct"))).BulkText());

        // A transaction whose commands fit one by one but not in one log entry: refused whole, none of it applied.
        var transaction = db.CreateTransaction();
        var first = transaction.StringSetAsync("tx-first", "1");
        var pieces = Enumerable.Range(0, 4).Select(i => transaction.StringSetAsync($"tx-part-{i}", new string('t', 300_000))).ToArray();
        var transactionRefused = await Assert.ThrowsAsync<RedisServerException>(() => transaction.ExecuteAsync());
        Assert.StartsWith("ERR command too large", transactionRefused.Message, StringComparison.Ordinal);
        Assert.False(await db.KeyExistsAsync("tx-first"));
        Assert.Equal(0, await db.KeyExistsAsync([.. Enumerable.Range(0, 4).Select(i => (RedisKey)$"tx-part-{i}")]));
        Assert.NotNull(first);
        Assert.NotEmpty(pieces);

        // A transaction that applied but whose reply is too large: the error says it applied (other command errors mean
        // "not applied"), and it did.
        var readBack = db.CreateTransaction();
        var marked = readBack.StringSetAsync("tx-applied", "yes");
        var reads = Enumerable.Range(0, 4).Select(i => readBack.StringGetAsync($"part-{i}")).ToArray();
        var replyLost = await Assert.ThrowsAsync<RedisServerException>(() => readBack.ExecuteAsync());
        Assert.StartsWith("ERR reply too large", replyLost.Message, StringComparison.Ordinal);
        Assert.Contains("if the command was a write or a transaction, it was applied and only its reply is lost", replyLost.Message, StringComparison.Ordinal);
        Assert.Equal("yes", (string?)await db.StringGetAsync("tx-applied"));
        Assert.NotNull(marked);
        Assert.NotEmpty(reads);
    }

    /// <summary>
    /// A rolling raise of MaxMessageBytes begun with the followers: a write forwarded through one of them (the gateway
    /// cannot reach the leader) that the leader's own limit refuses was answered UNKNOWN, though the leader's server had
    /// refused the message before running it. It is a "command too large" error now, and nothing is applied.
    /// </summary>
    [Fact]
    public async Task AForwardedWriteOverTheLeadersOwnLimitIsRefusedAsTooLargeNotLeftUnknown()
    {
        var patience = TimeSpan.FromSeconds(20);
        await using var cluster = new LocalCluster(output, settings: new Dictionary<string, string> { ["MaxMessageBytes"] = $"{MaxMessageBytes}" });
        cluster.SetNodeSetting(1, "MaxMessageBytes", $"{Protocol.MessageLimits.MinMaxMessageBytes}");
        await cluster.StartAsync();
        await MakeNode1LeadAsync(cluster, patience);

        var large = Commands.Set("forwarded", new string('f', 2 * Protocol.MessageLimits.MinMaxMessageBytes));
        large.ForwardToLeader = true;
        var refused = await cluster.ExecuteAsync(2, large, patience);
        Assert.True(refused.Error.StartsWith("ERR command too large", StringComparison.Ordinal), refused.ToString());
        output.WriteLine(refused.Error);
        Assert.Contains("for the leader, node 1: Received message exceeds the maximum configured message size.", refused.Error, StringComparison.Ordinal);

        var small = Commands.Set("forwarded", "small");
        small.ForwardToLeader = true;
        var accepted = await cluster.ExecuteAsync(2, small, patience);
        Assert.True(accepted.Ok, accepted.ToString());
    }

    /// <summary>
    /// A rolling raise of MaxMessageBytes: the leader's limit is raised first, and it accepts an entry larger than its
    /// followers' own limit. Peers exchange whatever the log holds, so the entry commits and reaches every replica (with
    /// each node's own limit on the Raft streams, the followers refused the Append at every heartbeat and nothing
    /// committed again).
    /// </summary>
    [Fact]
    public async Task AnEntryLargerThanTheFollowersOwnLimitStillReachesThem()
    {
        var patience = TimeSpan.FromSeconds(20);
        await using var cluster = new LocalCluster(output, settings: new Dictionary<string, string> { ["MaxMessageBytes"] = $"{Protocol.MessageLimits.MinMaxMessageBytes}" });
        cluster.SetNodeSetting(1, "MaxMessageBytes", $"{MaxMessageBytes}");
        await cluster.StartAsync();
        await MakeNode1LeadAsync(cluster, patience);

        var value = new string('v', 4 * Protocol.MessageLimits.MinMaxMessageBytes);
        var set = await cluster.ExecuteAsync(1, Commands.Set("large", value), patience);
        Assert.True(set.Ok, set.ToString());
        await Verify.CaughtUpAsync(cluster, patience);
        foreach (var follower in new ulong[] { 2, 3 })
        {
            var local = await cluster.ExecuteAsync(follower, new Command { Id = 1, Consistency = ReadConsistency.Local, Strlen = new StrLenRequest { Key = Commands.Bytes("large") } });
            Assert.Equal(value.Length, local.Integer);
        }
    }

    /// <summary>
    /// At the default MaxMessageBytes (16 MiB) a 5 MiB value fits a message but not a page of the Raft log (4 MiB): the
    /// leader proposed it, and every node stopped (exit code 3) as it saved the entry, so one SET took the whole cluster
    /// down. Refused before proposal now, and the cluster carries on.
    /// </summary>
    [Fact]
    public async Task AValueLargerThanALogPageIsRefusedAndEveryNodeStaysUp()
    {
        var patience = TimeSpan.FromSeconds(20);
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(patience);
        var refused = await cluster.ExecuteAsync(leader, Commands.Set("large", new string('v', 5 * 1024 * 1024)), patience);
        Assert.StartsWith("ERR command too large", refused.Error, StringComparison.Ordinal);
        Assert.Contains("a Raft log page", refused.Error, StringComparison.Ordinal);

        var fits = await cluster.ExecuteAsync(leader, Commands.Set("fits", new string('f', 3 * 1024 * 1024)), patience);
        Assert.True(fits.Ok, fits.ToString());
        await Verify.CaughtUpAsync(cluster, patience);
        Assert.All(cluster.Nodes.Values, node => Assert.True(node.IsRunning, $"node {node.Id} stopped: {node.RecentOutput(20)}"));
    }

    private async Task MakeNode1LeadAsync(LocalCluster cluster, TimeSpan patience)
    {
        if (await cluster.WaitForLeaderAsync(patience) != 1)
        {
            var moved = await Dcachectl.RunAsync(output, ["leader", "transfer", "--to", "1", .. cluster.CtlOptions()]);
            Assert.True(moved.Exit == 0, moved.ToString());
            await Eventually.WaitAsync(async () => await cluster.WaitForLeaderAsync(patience) == 1, patience, "node 1 to lead");
        }
    }
}
