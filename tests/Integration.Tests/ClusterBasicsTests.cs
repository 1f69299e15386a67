using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class ClusterBasicsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ThreeNodesElectALeaderCommitWritesAndServeLinearizableReadsOnEveryFollower()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));

        foreach (var node in cluster.Nodes.Keys)
        {
            var reply = await cluster.ExecuteAsync(node, Commands.Set($"key-{node}", $"value-{node}"));
            if (node == leader)
            {
                Assert.True(reply.Ok, reply.Describe());
            }
            else
            {
                // A follower refuses a write without applying it and names the leader.
                Assert.Equal(FailureKind.NotLeader, reply.Failure.Kind);
                Assert.Equal(leader, reply.Failure.LeaderId);
                Assert.Equal(cluster[leader].GrpcUrl, reply.Failure.LeaderAddress);
                reply = await cluster.ExecuteAsync(reply.Failure.LeaderId, Commands.Set($"key-{node}", $"value-{node}"));
                Assert.True(reply.Ok, reply.Describe());
            }

            // Acknowledged: a linearizable read on every node, followers included, returns it at once.
            foreach (var reader in cluster.Nodes.Keys)
            {
                var read = await cluster.ExecuteAsync(reader, Commands.Get($"key-{node}"));
                Assert.Equal($"value-{node}", read.BulkText());
            }
        }
    }
}
