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
    public async Task WithTheSmallestMessageLimitLargeWritesReplicateAndALaggingNodeCatchesUpBySnapshot()
    {
        // Dcache:Node:MaxMessageBytes at its minimum (128 KiB: entries up to 64 KiB). Appends were cut at 1 MiB and
        // snapshot chunks at 256 KiB whatever the limit: a follower could never receive three 40 KB writes proposed
        // together, and a lagging one never a snapshot, and the cluster stopped committing.
        var settings = new Dictionary<string, string>
        {
            ["MaxMessageBytes"] = $"{Dcache.Protocol.MessageLimits.MinMaxMessageBytes}",
            ["SnapshotEntries"] = "100",
            ["SnapshotCatchUpEntries"] = "10",
        };
        await using var cluster = new LocalCluster(output, settings: settings);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(20));
        var lagging = cluster.Nodes.Keys.First(id => id != leader);
        cluster[lagging].Kill();

        // Written concurrently, so that the leader proposes several together; 300 of 40 KB make a 12 MB snapshot.
        var value = new string('v', 40_000);
        for (var round = 0; round < 30; round++)
        {
            var writes = Enumerable.Range(0, 10).Select(i => cluster.ExecuteAsync(leader, Commands.Set($"big-{(round * 10) + i}", value), TimeSpan.FromSeconds(30)));
            Assert.All(await Task.WhenAll(writes), reply => Assert.True(reply.Ok, reply.ToString()));
        }

        cluster[lagging].Start();
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(60));
        Assert.Contains("Installed snapshot", cluster[lagging].RecentOutput(400), StringComparison.Ordinal);
        await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(30));
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
            // Only NotLeader (not applied) is followed to the new leader: safe for INCRBY too. A loaded machine can
            // outlast an election timeout in the middle of 1,500 writes.
            Reply reply;
            (leader, reply) = await cluster.ExecuteFollowingTheLeaderAsync(leader, command, TimeSpan.FromSeconds(30));
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

    /// <summary>
    /// A node started with another memory cap than the others' would evict other keys from the same entries and diverge
    /// for good (a rolling change of MaxMemoryBytes did exactly that). The others refuse its Raft traffic and it refuses
    /// theirs, so it applies nothing; started again with the cluster's settings, it catches up and agrees.
    /// </summary>
    [Fact]
    public async Task ANodeWhoseCacheSettingsDifferGetsNoEntriesUntilItIsStartedWithTheClustersOwn()
    {
        var settings = new Dictionary<string, string> { ["MaxMemoryBytes"] = "65536" };
        await using var cluster = new LocalCluster(output, settings: settings);
        cluster.SetNodeSetting(3, "MaxMemoryBytes", "131072");
        cluster[1].Start();
        cluster[2].Start();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        cluster[3].Start();
        // Two live voters of three: a pause of either past the election timeout moves leadership (seen in CI).
        for (var i = 0; i < 1_000; i++)
        {
            (leader, var reply) = await cluster.ExecuteFollowingTheLeaderAsync(leader, Commands.Set($"key-{i}", new string('v', 100)), TimeSpan.FromSeconds(30));
            Assert.True(reply.ResultCase == Reply.ResultOneofCase.Ok, reply.Describe());
        }

        var commit = (await cluster.StatusAsync(leader)).CommitIndex;
        await Eventually.WaitAsync(() => cluster[3].RecentOutput(200).Contains("its cache settings (max-memory-bytes=", StringComparison.Ordinal), TimeSpan.FromSeconds(30), "node 3 to log that its peers' settings differ");
        var refused = await cluster.StatusAsync(3);
        Assert.True(refused.AppliedIndex < commit / 2, $"node 3 applied {refused.AppliedIndex} of {commit} entries under its own cap");

        await cluster[3].StopAsync(TimeSpan.FromSeconds(10));
        cluster.SetNodeSetting(3, "MaxMemoryBytes", null);
        cluster[3].Start();
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(30));
        output.WriteLine($"every replica: {await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(20))}");
    }
}
