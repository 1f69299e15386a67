using System.Globalization;
using System.Text.RegularExpressions;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// A gateway cut off from a healthy leader (only its own link to the leader: the nodes reach each other) still writes:
/// once its breaker for the leader opens, its writes go to a follower, which forwards them to the leader. Each applies
/// once (the INCRs add up to what was acknowledged), errors are only the documented ones, and once the link heals the
/// writes go straight to the leader again (the followers forward no more).
/// </summary>
public sealed partial class ForwardedWriteTests(ITestOutputHelper output)
{
    private const int Clients = 4;
    private const int IncrsPerClient = 50;

    [Fact]
    public async Task AGatewayCutOffFromTheLeaderWritesThroughAFollowerAndEachWriteAppliesOnce()
    {
        await using var cluster = new LocalCluster(output);
        // One address per node: with several (the chaos mesh's default) the gateway holds a connection and a breaker per
        // address of the leader, and its status poll moves its leader between them, each closed breaker costing timeouts.
        await using var mesh = new ProxyMesh(cluster, oneAddressPerNode: true);
        using var http = new HttpClient();
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        var followers = cluster.Nodes.Keys.Where(id => id != leader).ToList();
        // Above the gateway's 4 s deadline: every command ends at the gateway, never at this client's patience.
        var options = new ConfigurationOptions { EndPoints = { $"127.0.0.1:{cluster.GatewayPort}" }, AsyncTimeout = 15_000, SyncTimeout = 15_000, AbortOnConnectFail = false };
        await using var redis = await ConnectionMultiplexer.ConnectAsync(options);
        var db = redis.GetDatabase();
        await Eventually.WaitAsync(async () => await db.StringSetAsync("warm", "up"), TimeSpan.FromSeconds(30), "a write through the gateway before the cut");

        var cut = mesh.CutGateway([leader]);
        output.WriteLine($"cut the gateway's link to the leader, node {leader}");
        var forwardedBefore = await ForwardedAsync(http, cluster, followers);

        var acknowledged = new int[Clients];
        var unknown = new int[Clients];
        var notApplied = new int[Clients];
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var setsAcknowledged = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(client => Task.Run(async () =>
        {
            for (var n = 0; n < IncrsPerClient; n++)
            {
                try
                {
                    await db.StringIncrementAsync($"counter:{client}");
                    acknowledged[client]++;
                }
                catch (RedisServerException ex)
                {
                    errors.Enqueue(ex.Message);
                    _ = ex.Message.StartsWith("UNKNOWN ", StringComparison.Ordinal) ? unknown[client]++ : notApplied[client]++;
                }

                try
                {
                    if (await db.StringSetAsync($"cut{client}:{n}", $"v{n}"))
                    {
                        setsAcknowledged[$"cut{client}:{n}"] = $"v{n}";
                    }
                }
                catch (RedisServerException ex)
                {
                    errors.Enqueue(ex.Message);
                }
            }
        })));

        var forwardedDuringCut = await ForwardedAsync(http, cluster, followers) - forwardedBefore;
        // A leader change during the cut would let the gateway write to a new leader it reaches: said, for the reader.
        output.WriteLine($"leader after the writes: node {await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30))} (node {leader} at the cut)");
        output.WriteLine($"during the cut: INCRs acknowledged {acknowledged.Sum()}, unknown {unknown.Sum()}, not applied {notApplied.Sum()}; SETs acknowledged {setsAcknowledged.Count}; writes the followers forwarded {forwardedDuringCut}");
        foreach (var error in errors.Distinct().Take(8))
        {
            output.WriteLine($"  error seen: {error}");
        }

        Assert.All(errors, error => Assert.True(GatewayFailoverTests.DocumentedErrorPrefixes.Any(prefix => error.StartsWith(prefix, StringComparison.Ordinal)), $"undocumented error: {error}"));
        // Writes go on: the few that end otherwise are those caught while the breaker was still closed.
        const int Writes = 2 * Clients * IncrsPerClient;
        Assert.True(acknowledged.Sum() + setsAcknowledged.Count >= Writes * 9 / 10, $"only {acknowledged.Sum() + setsAcknowledged.Count} of {Writes} writes acknowledged while the gateway could not reach the leader");
        // Without forwarding the followers forward none; a leader change during the cut (the gateway then writes to the
        // new leader itself) leaves fewer than all (178 of 400 in one CI run), so the bar is a quarter.
        Assert.True(forwardedDuringCut >= Writes / 4, $"the followers forwarded only {forwardedDuringCut} writes");

        mesh.Heal(cut);
        output.WriteLine("healed the gateway's link to the leader");

        // Writes go straight to the leader again: a run of writes, all acknowledged, that no follower forwarded. The run
        // lasts a second at least, so that the two scrapes around it cannot both be one cached scrape of the exporter.
        var healed = await Eventually.WaitAsync(
            async () =>
            {
                var forwarded = await ForwardedAsync(http, cluster, followers);
                var run = System.Diagnostics.Stopwatch.StartNew();
                for (var n = 0; n < 20 || run.Elapsed < TimeSpan.FromSeconds(1); n++)
                {
                    if (!await db.StringSetAsync($"healed:{n % 20}", "v"))
                    {
                        return false;
                    }
                }

                return await ForwardedAsync(http, cluster, followers) == forwarded;
            },
            TimeSpan.FromSeconds(60),
            "a second of writes that no follower forwarded after the heal");
        output.WriteLine($"writes went straight to the leader again {healed.TotalSeconds:F1} s after the heal");

        // Each INCR applied once: the counters hold what was acknowledged, plus at most the unknown ones.
        for (var client = 0; client < Clients; client++)
        {
            var counter = (long)await db.StringGetAsync($"counter:{client}");
            Assert.InRange(counter, acknowledged[client], acknowledged[client] + unknown[client]);
        }

        foreach (var (key, value) in setsAcknowledged)
        {
            Assert.Equal(value, (string?)await db.StringGetAsync(key));
        }

        await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(60));
    }

    /// <summary>Writes <paramref name="nodes"/> forwarded to their leader and had answered, from their /metrics.</summary>
    private static async Task<long> ForwardedAsync(HttpClient http, LocalCluster cluster, IEnumerable<ulong> nodes)
    {
        long total = 0;
        foreach (var id in nodes)
        {
            var metrics = await http.GetStringAsync($"http://127.0.0.1:{cluster[id].HttpPort}/metrics");
            foreach (Match match in ForwardedAnsweredLine().Matches(metrics))
            {
                total += (long)double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            }
        }

        return total;
    }

    [GeneratedRegex(@"^dcache_node_forwarded_writes_total\{[^}]*outcome=""answered""[^}]*\} (\S+)", RegexOptions.Multiline)]
    private static partial Regex ForwardedAnsweredLine();
}
