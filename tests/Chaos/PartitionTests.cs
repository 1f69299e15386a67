using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Xunit.Abstractions;

namespace Dcache.Chaos;

/// <summary>Partitions made by the link proxies really cut traffic, and the product behaves as it must on the minority side.</summary>
[Trait("Category", "Chaos")]
public sealed class PartitionTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task MinoritySideCannotCommitAndItsLinearizableReadsFailRatherThanGoStale(bool isolateTheLeader)
    {
        await using var cluster = new LocalCluster(output);
        await using var mesh = new ProxyMesh(cluster);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(Reply.ResultOneofCase.Ok, (await cluster.ExecuteAsync(leader, Commands.Set("k", "before"))).ResultCase);
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));

        var cutOff = isolateTheLeader ? leader : cluster.Nodes.Keys.First(id => id != leader);
        var majority = cluster.Nodes.Keys.Where(id => id != cutOff).ToList();
        mesh.Partition([cutOff], majority);
        output.WriteLine($"node {cutOff} ({(isolateTheLeader ? "leader" : "follower")}) cut off from [{string.Join(",", majority)}]");

        // The majority side (re-)elects a leader and commits a new value.
        ulong majorityLeader = 0;
        await Eventually.WaitAsync(async () =>
        {
            foreach (var id in majority)
            {
                var status = await cluster.StatusAsync(id);
                if (status.Role == "Leader" && status.NodeId != cutOff)
                {
                    var reply = await cluster.ExecuteAsync(id, Commands.Set("k", "after"), TimeSpan.FromSeconds(2));
                    majorityLeader = id;
                    return reply.ResultCase == Reply.ResultOneofCase.Ok;
                }
            }

            return false;
        }, TimeSpan.FromSeconds(20), "the majority to commit a write under a leader of its own");

        // The cut-off node cannot commit a write, and a linearizable read there fails or times out instead of
        // returning the value it still holds.
        var write = await TryExecuteAsync(cluster, cutOff, Commands.Set("k", "minority"));
        Assert.True(write is not { ResultCase: Reply.ResultOneofCase.Ok }, $"the cut-off node acknowledged a write: {write}");
        var read = await TryExecuteAsync(cluster, cutOff, Commands.Get("k"));
        Assert.True(read is null || read.ResultCase == Reply.ResultOneofCase.Failure, $"the cut-off node served a linearizable read: {read}");

        // Its local state proves that nothing crossed the partition: it never saw the majority's write.
        var local = await cluster.ExecuteAsync(cutOff, Commands.Get("k", ReadConsistency.Local));
        Assert.Equal("before", local.BulkText());

        mesh.HealAll();
        await Eventually.WaitAsync(async () =>
            (await cluster.ExecuteAsync(cutOff, Commands.Get("k"), TimeSpan.FromSeconds(2))) is { ResultCase: Reply.ResultOneofCase.Bulk } r && r.BulkText() == "after",
            TimeSpan.FromSeconds(20), $"node {cutOff} to read the majority's value after the heal");
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));
        foreach (var id in cluster.Nodes.Keys)
        {
            Assert.Equal("after", (await cluster.ExecuteAsync(id, Commands.Get("k", ReadConsistency.Local))).BulkText());
        }

        output.WriteLine($"majority leader {majorityLeader}; cut-off write: {Describe(write)}; cut-off read: {Describe(read)}");
    }

    /// <summary>The reply, or null when the call timed out (what a client of a partitioned node sees).</summary>
    private static async Task<Reply?> TryExecuteAsync(LocalCluster cluster, ulong node, Command command)
    {
        try
        {
            return await cluster.ExecuteAsync(node, command, TimeSpan.FromSeconds(3));
        }
        catch (RpcException ex) when (ex.StatusCode == StatusCode.DeadlineExceeded)
        {
            return null;
        }
    }

    private static string Describe(Reply? reply) => reply?.ToString() ?? "no reply within 3 s";
}
