using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// SCAN on a real cluster: through the gateway with real clients, and with one iteration's calls spread over every
/// replica while the leader restarts from its snapshot and log.
/// </summary>
public sealed class ScanTests(ITestOutputHelper output)
{
    // Small enough that the nodes take snapshots of these keys, so a restarted node loads one.
    private static readonly Dictionary<string, string> SnapshotOften = new() { ["SnapshotEntries"] = "200", ["SnapshotCatchUpEntries"] = "20" };

    [Fact]
    public async Task RedisCliAndStackExchangeRedisListEveryKeyWithScan()
    {
        await using var cluster = new LocalCluster(output, settings: SnapshotOften);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = redis.GetDatabase();
        var users = Enumerable.Range(0, 1_000).Select(i => "user:" + i).ToList();
        var orders = Enumerable.Range(0, 500).Select(i => "order:" + i).ToList();
        var batch = db.CreateBatch();
        var writes = users.Concat(orders).Select(key => batch.StringSetAsync(key, "v")).ToList();
        batch.Execute();
        Assert.All(await Task.WhenAll(writes), Assert.True);

        // redis-cli --scan runs SCAN with its default COUNT (10) until the cursor comes back 0: 150 calls here.
        var (exit, listed) = await RedisTools.RedisCliAsync(cluster.GatewayPort, "--scan");
        Assert.Equal(0, exit);
        Assert.Equal(users.Concat(orders).Order(StringComparer.Ordinal), Lines(listed).Order(StringComparer.Ordinal));

        (exit, listed) = await RedisTools.RedisCliAsync(cluster.GatewayPort, "--scan --pattern user:1*");
        Assert.Equal(0, exit);
        Assert.Equal(users.Where(key => key.StartsWith("user:1", StringComparison.Ordinal)).Order(StringComparer.Ordinal), Lines(listed).Order(StringComparer.Ordinal));

        // StackExchange.Redis's IServer.Keys pages with SCAN (pageSize is its COUNT).
        var server = redis.GetServer($"127.0.0.1:{cluster.GatewayPort}");
        var listedOrders = server.Keys(pattern: "order:*", pageSize: 33).Select(key => (string)key!).ToList();
        Assert.Equal(orders.Order(StringComparer.Ordinal), listedOrders.Order(StringComparer.Ordinal));
        Assert.Equal(1_500, server.Keys(pageSize: 250).Count());
        Assert.Empty(server.Keys(pattern: "nothing:*"));
    }

    [Fact]
    public async Task AnIterationSpreadOverEveryReplicaReturnsEveryKeyPresentThroughoutWhileTheLeaderRestarts()
    {
        await using var cluster = new LocalCluster(output, settings: SnapshotOften);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        var present = Enumerable.Range(0, 1_200).Select(i => "base:" + i).ToList();
        foreach (var chunk in present.Chunk(40))
        {
            var replies = await Task.WhenAll(chunk.Select(key => cluster.ExecuteAsync(leader, Commands.Set(key, "v"))));
            Assert.All(replies, reply => Assert.True(reply.Ok, reply.ToString()));
        }

        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(30));
        var returned = new HashSet<string>(StringComparer.Ordinal);
        ulong cursor = 0;
        var calls = 0;
        ulong restarted = 0;
        do
        {
            // Each call goes to the next node: a cursor from one replica continues on another.
            var node = (ulong)(calls % cluster.Nodes.Count) + 1;
            var page = await ScanAsync(cluster, node, cursor);
            returned.UnionWith(page.Keys);
            cursor = page.NextCursor;
            calls++;

            // Keys created and deleted between calls: they may or may not be returned.
            await WriteAsync(cluster, Commands.Set("churn:" + calls, "v"));
            await WriteAsync(cluster, new Command { Del = new DelRequest { Keys = { Commands.Bytes("churn:" + (calls - 1)) } } });

            if (calls == 10)
            {
                // The leader restarts from its snapshot and log (a new index, a new dictionary seed), and another leads.
                restarted = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
                cluster[restarted].Kill();
                cluster[restarted].Start();
                await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
                await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(30));
                Assert.Contains("Loaded snapshot", cluster[restarted].RecentOutput(1_000), StringComparison.Ordinal);
            }
        }
        while (cursor != 0);

        output.WriteLine($"{calls} calls over {cluster.Nodes.Count} nodes, node {restarted} restarted after the 10th; {returned.Count} keys returned");
        Assert.True(calls > 20, $"only {calls} calls: the restart was not in the middle of the iteration");
        var missing = present.Where(key => !returned.Contains(key)).ToList();
        Assert.True(missing.Count == 0, $"{missing.Count} keys present throughout were not returned, e.g. {missing.FirstOrDefault()}");
    }

    private static async Task<(ulong NextCursor, List<string> Keys)> ScanAsync(LocalCluster cluster, ulong node, ulong cursor)
    {
        Reply? reply = null;
        await Eventually.WaitAsync(async () =>
        {
            var scan = new ScanRequest { Cursor = cursor, Count = 25, Pattern = Commands.Bytes("*") };
            reply = await cluster.ExecuteAsync(node, new Command { Consistency = ReadConsistency.Linearizable, Scan = scan });
            return reply.ResultCase == Reply.ResultOneofCase.Array;
        }, TimeSpan.FromSeconds(30), $"node {node} to answer SCAN {cursor}");
        var items = reply!.Array.Items;
        return (ulong.Parse(items[0].Bulk.ToStringUtf8(), System.Globalization.CultureInfo.InvariantCulture), [.. items[1].Array.Items.Select(key => key.Bulk.ToStringUtf8())]);
    }

    /// <summary>Sends a write to whichever node leads, trying again until one applies it.</summary>
    private static async Task WriteAsync(LocalCluster cluster, Command command)
    {
        await Eventually.WaitAsync(async () =>
        {
            var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
            var reply = await cluster.ExecuteAsync(leader, command);
            return reply.ResultCase != Reply.ResultOneofCase.Failure;
        }, TimeSpan.FromSeconds(30), $"a leader to apply {command.OpCase}");
    }

    private static IEnumerable<string> Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
}
