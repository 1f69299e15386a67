using System.Diagnostics;
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
        var written = Stopwatch.StartNew();
        Assert.True((await cluster.ExecuteAsync(1, Commands.Set("k", "v", ttlMs: 60_000))).Ok);
        await Verify.CaughtUpAsync(cluster, Patience);
        var ttl = await cluster.ExecuteAsync(2, new Command { Id = 1, Consistency = ReadConsistency.Local, Ttl = new TtlRequest { Key = Commands.Bytes("k"), Milliseconds = true } });
        AssertTtlOfAKeyWrittenAgo(ttl, written, "the TTL node 2 reads by its own (right) clock");

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
        var written = Stopwatch.StartNew();
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("k", "v", ttlMs: 60_000))).Ok);
        await Verify.CaughtUpAsync(cluster, Patience);
        var ttl = await cluster.ExecuteAsync(3, new Command { Id = 1, Consistency = ReadConsistency.Local, Ttl = new TtlRequest { Key = Commands.Bytes("k"), Milliseconds = true } });
        AssertTtlOfAKeyWrittenAgo(ttl, written, "the TTL node 3 reads by the cluster's time");
    }

    /// <summary>
    /// A 60 s key read <paramref name="sinceWrite"/> after its write was sent: what is left of the minute, give or take
    /// the clock offsets' error (half a round trip) and rounding; a clock an hour off would be off by an hour.
    /// </summary>
    private static void AssertTtlOfAKeyWrittenAgo(Reply ttl, Stopwatch sinceWrite, string what)
    {
        var least = 60_000 - sinceWrite.ElapsedMilliseconds - 1_000;
        Assert.True(ttl.Integer >= least && ttl.Integer <= 61_000, $"{what}: {ttl}, expected {least}..61000");
    }
}
