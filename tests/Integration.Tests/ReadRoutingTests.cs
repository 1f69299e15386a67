using System.Globalization;
using System.Text.RegularExpressions;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>Which nodes serve the gateway's reads (Dcache:Gateway:Cluster:ReadRouting), told by each node's cache-hit counter.</summary>
public sealed partial class ReadRoutingTests(ITestOutputHelper output)
{
    private const int Reads = 60;

    [Theory]
    [InlineData("Members")]
    [InlineData("Leader")]
    public async Task ReadsGoRoundTheMembersByDefaultAndToTheLeaderWhenAsked(string routing)
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        await cluster.StartGatewayAsync(routing == "Members" ? null : new Dictionary<string, string> { ["Cluster:ReadRouting"] = routing });

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = redis.GetDatabase();
        Assert.True(await db.StringSetAsync("routed", "value")); // a write: the gateway now knows the leader
        for (var i = 0; i < Reads; i++)
        {
            Assert.Equal("value", (string?)await db.StringGetAsync("routed"));
        }

        // Each node publishes its counters once per tick: wait until every read is counted somewhere.
        using var http = new HttpClient();
        var hits = new Dictionary<ulong, long>();
        await Eventually.WaitAsync(async () =>
        {
            foreach (var (id, node) in cluster.Nodes)
            {
                hits[id] = HitsIn(await http.GetStringAsync($"http://127.0.0.1:{node.HttpPort}/metrics"));
            }

            return hits.Values.Sum() >= Reads;
        }, TimeSpan.FromSeconds(10), $"{Reads} cache hits counted over the nodes");
        output.WriteLine($"leader {leader}; hits by node: {string.Join(", ", hits.Select(h => $"{h.Key}={h.Value}"))}");

        if (routing == "Leader")
        {
            Assert.Equal(Reads, hits[leader]);
            Assert.All(hits.Where(h => h.Key != leader), h => Assert.Equal(0, h.Value));
        }
        else
        {
            // Round robin over three members: every node serves about a third.
            Assert.All(hits.Values, count => Assert.InRange(count, Reads / 6, Reads));
        }
    }

    private static long HitsIn(string metrics)
    {
        var match = HitsLine().Match(metrics);
        return match.Success ? (long)double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }

    [GeneratedRegex(@"^dcache_cache_hits_total(?:\{[^}]*\})? (\S+)", RegexOptions.Multiline)]
    private static partial Regex HitsLine();
}
