using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>A node whose wall clock is wrong stamps and reads by its voters' time, not its own.</summary>
public sealed class ClockSkewTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ALeaderTwoHoursAheadStampsTheVotersTimeSoATtlMeansWhatItSays()
    {
        await using var cluster = new LocalCluster(output);
        cluster[1].Start("--Dcache:Node:TestOnlyClockOffset=02:00:00");
        cluster[2].Start();
        cluster[3].Start();
        var leader = await cluster.WaitForLeaderAsync(Patience);
        if (leader != 1)
        {
            var moved = await Dcachectl.RunAsync(output, ["leader", "transfer", "--to", "1", .. cluster.CtlOptions()]);
            Assert.True(moved.Exit == 0, moved.ToString());
            await Eventually.WaitAsync(async () => await cluster.WaitForLeaderAsync(Patience) == 1, Patience, "node 1 to lead");
        }

        // Stamped with node 1's own clock, the key would expire two hours and a minute from now, and every
        // short TTL set afterwards would be expired on arrival by the cache's clock, which never goes back.
        Assert.True((await cluster.ExecuteAsync(1, Commands.Set("k", "v", ttlMs: 60_000))).Ok);
        await Verify.CaughtUpAsync(cluster, Patience);
        var ttl = await cluster.ExecuteAsync(2, new Command { Id = 1, Consistency = ReadConsistency.Local, Ttl = new TtlRequest { Key = Commands.Bytes("k"), Milliseconds = true } });
        Assert.True(ttl.Integer is > 50_000 and <= 60_000, $"the TTL node 2 reads by its own (right) clock: {ttl}");

        var metrics = await new HttpClient().GetStringAsync($"http://127.0.0.1:{cluster[2].HttpPort}/metrics");
        var offset = metrics.Split('\n').Single(line => line.StartsWith("dcache_node_peer_clock_offset_seconds{", StringComparison.Ordinal) && line.Contains("peer=\"1\"", StringComparison.Ordinal));
        output.WriteLine(offset);
        Assert.InRange(double.Parse(offset[(offset.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture), 7_199, 7_201);
    }

    [Fact]
    public async Task AFollowerAnHourBehindReadsByTheClustersTimeNotItsOwn()
    {
        await using var cluster = new LocalCluster(output);
        cluster[1].Start();
        cluster[2].Start();
        var leader = await cluster.WaitForLeaderAsync(Patience);
        // Started after the election, node 3 hears no voter but the leader (an election would have given it a
        // reading of the other follower too, for a while).
        cluster[3].Start("--Dcache:Node:TestOnlyClockOffset=-01:00:00");

        // By its own clock node 3 would see this key live for an hour and a minute, serving it long after it expired.
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("k", "v", ttlMs: 60_000))).Ok);
        await Verify.CaughtUpAsync(cluster, Patience);
        var ttl = await cluster.ExecuteAsync(3, new Command { Id = 1, Consistency = ReadConsistency.Local, Ttl = new TtlRequest { Key = Commands.Bytes("k"), Milliseconds = true } });
        Assert.True(ttl.Integer is > 50_000 and <= 60_000, $"the TTL node 3 reads by the cluster's time: {ttl}");
    }
}
