using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class ReplicationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ANodeDownWhileTheLogIsCompactedPastItCatchesUpByInstallSnapshot()
    {
        var settings = new Dictionary<string, string> { ["SnapshotEntries"] = "300", ["SnapshotCatchUpEntries"] = "20" };
        await using var cluster = new LocalCluster(output, settings: settings);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var lagging = cluster.Nodes.Keys.First(id => id != leader);
        cluster[lagging].Kill();

        await using (var load = new WriteLoad(cluster, writers: 8, maxWritesPerWriter: 200))
        {
            await load.WaitForAcknowledgedAsync(1600, TimeSpan.FromSeconds(60));
            await load.StopAsync();

            // The log behind the lagging node's position is gone from the others.
            var status = await cluster.StatusAsync(leader);
            Assert.True(status.CommitIndex > 900, $"commit {status.CommitIndex}");

            cluster[lagging].Start();
            await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(30));
            Assert.Contains("Installed snapshot", cluster[lagging].RecentOutput(400), StringComparison.Ordinal);
            var missing = await Verify.MissingAsync(cluster, lagging, load.Acknowledged);
            Assert.Empty(missing);
        }

        await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task ReplicasAgreeAfterTtlsPurgesAndEvictionsUnderTheMemoryCap()
    {
        // A cap of ~64 KiB holds a few hundred small keys: the writes below force evictions.
        var settings = new Dictionary<string, string> { ["MaxMemoryBytes"] = "65536", ["ExpiryPurgeMilliseconds"] = "100", ["SnapshotEntries"] = "500" };
        await using var cluster = new LocalCluster(output, settings: settings);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));

        var random = new Random(7);
        for (var i = 0; i < 1500; i++)
        {
            var command = (i % 4) switch
            {
                0 => Commands.Set($"short-{i}", new string('x', random.Next(10, 200)), ttlMs: random.Next(50, 400)),
                1 => Commands.Set($"long-{i % 700}", new string('y', random.Next(10, 200))),
                2 => Commands.IncrBy($"counter-{i % 13}", random.Next(-5, 6)),
                _ => Commands.Set($"ttl-{i}", "z", ttlMs: 60_000),
            };
            var reply = await cluster.ExecuteAsync(leader, command);
            Assert.True(reply.ResultCase is Reply.ResultOneofCase.Ok or Reply.ResultOneofCase.Integer, reply.Describe());
        }

        // 700 distinct long-lived keys of ~250 accounted bytes cannot fit in 64 KiB: the cap must have evicted most of them.
        var keys = (await cluster.ExecuteAsync(leader, Commands.DbSize())).Integer;
        Assert.InRange(keys, 1, 400);
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));
        var digest = await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(20));
        output.WriteLine($"every replica: {digest}");
    }
}
