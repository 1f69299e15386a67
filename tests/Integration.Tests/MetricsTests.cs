using System.Globalization;
using System.Net.Http;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class MetricsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task NodesAndGatewayExportPrometheusMetricsOnTheirHttpPorts()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        await using (var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}"))
        {
            var db = redis.GetDatabase();
            for (var i = 0; i < 20; i++)
            {
                await db.StringSetAsync($"m{i}", i);
                await db.StringGetAsync($"m{i}");
            }
        }

        using var http = new HttpClient();
        string[] nodeSeries =
        [
            "dcache_raft_term", "dcache_raft_role", "dcache_raft_leader", "dcache_raft_commit_index", "dcache_raft_applied_index",
            "dcache_raft_log_entries", "dcache_raft_leader_changes_total", "dcache_raft_proposals_total{",
            "dcache_storage_durable_commit_duration_seconds_bucket{", "dcache_cache_keys", "dcache_cache_bytes", "dcache_cache_sessions",
            "dcache_cache_hits_total", "dcache_cache_misses_total", "dcache_cache_evictions_total", "dcache_cache_expirations_total", "dcache_node_command_streams",
            "dcache_snapshot_failures_total{", "dcache_snapshot_installs_total{", "service_name=\"dcache-node\"",
        ];
        var leaderMetrics = "";
        await Eventually.WaitAsync(async () =>
        {
            leaderMetrics = await http.GetStringAsync($"http://127.0.0.1:{cluster[leader].HttpPort}/metrics");
            return nodeSeries.All(s => leaderMetrics.Contains(s, StringComparison.Ordinal));
        }, TimeSpan.FromSeconds(10), "every node series on the leader's /metrics");
        Assert.Contains("result=\"accepted\"", leaderMetrics, StringComparison.Ordinal);

        string[] gatewaySeries =
        [
            "dcache_gateway_commands_total{", "dcache_gateway_command_duration_seconds_bucket{", "dcache_gateway_connections",
            // Exported at 0 before any event, so that an alert on their rate sees 0 rather than no data.
            "dcache_gateway_connections_rejected_total{", "dcache_gateway_connections_closed_by_gateway_total{",
            "dcache_gateway_leader{", "dcache_gateway_members{", "service_name=\"dcache-gateway\"",
        ];
        var gatewayMetrics = "";
        await Eventually.WaitAsync(async () =>
        {
            gatewayMetrics = await http.GetStringAsync($"http://127.0.0.1:{cluster.GatewayHttpPort}/metrics");
            return gatewaySeries.All(s => gatewayMetrics.Contains(s, StringComparison.Ordinal))
                && SeriesValue(gatewayMetrics, "dcache_gateway_leader{") == (long)leader
                && SeriesValue(gatewayMetrics, "dcache_gateway_members{", "health=\"healthy\"") == 3;
        }, TimeSpan.FromSeconds(10), "every gateway series on its /metrics, the leader and three healthy members among them");
        Assert.Equal(0, SeriesValue(gatewayMetrics, "dcache_gateway_members{", "health=\"unhealthy\""));
        Assert.Equal(0, SeriesValue(gatewayMetrics, "dcache_gateway_connections_closed_by_gateway_total{", "reason=\"idle_timeout\""));

        // Behind a port mapping or a proxy the Host header names another port: still answered (a trailing slash too).
        foreach (var port in new[] { cluster[leader].HttpPort, cluster.GatewayHttpPort })
        {
            using var mapped = new HttpRequestMessage(HttpMethod.Get, $"http://127.0.0.1:{port}/metrics/");
            mapped.Headers.Host = "metrics.example:9100";
            using var response = await http.SendAsync(mapped);
            Assert.True(response.IsSuccessStatusCode, $"port {port} answered {(int)response.StatusCode} to a scrape naming another host port");
            Assert.Contains("dcache_", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The gRPC (h2c) port serves no metrics: Prometheus scrapes HTTP/1.1 only.
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => http.GetStringAsync($"{cluster[leader].GrpcUrl}/metrics"));
    }

    /// <summary>The value of the first series on <paramref name="metrics"/> that starts so and has <paramref name="label"/>; -1 when none.</summary>
    private static long SeriesValue(string metrics, string start, string label = "")
    {
        foreach (var line in metrics.Split('\n'))
        {
            if (line.StartsWith(start, StringComparison.Ordinal) && line.Contains(label, StringComparison.Ordinal))
            {
                return (long)double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
            }
        }

        return -1;
    }

    /// <summary>
    /// An election passes through "no leader" on every node: dcache_raft_leader_changes_total must count the leader it
    /// ends with, once, not the step through none as well (it did, and the dashboard showed each election twice).
    /// </summary>
    [Fact]
    public async Task ALeaderTransferCountsOneLeaderChangePerTermOnEveryNode()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        using var http = new HttpClient();
        var before = await ScrapeLeaderCountersAsync(cluster, http);

        var target = cluster.Nodes.Keys.First(id => id != leader);
        var moved = await Dcachectl.RunAsync(output, ["leader", "transfer", "--to", target.ToString(CultureInfo.InvariantCulture), .. cluster.CtlOptions()]);
        Assert.True(moved.Exit == 0, moved.ToString());
        Assert.Equal(target, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)));

        var after = await ScrapeLeaderCountersAsync(cluster, http);
        foreach (var (id, (changes, term)) in after)
        {
            var termsPassed = term - before[id].Term;
            Assert.True(termsPassed >= 1, $"node {id}: term {before[id].Term} -> {term}");
            // One leader per term, each learnt of once: a count above the terms passed counts something else.
            Assert.True(changes - before[id].Changes == termsPassed,
                $"node {id}: leader changes {before[id].Changes} -> {changes} while the term went {before[id].Term} -> {term}");
        }
    }

    /// <summary>
    /// Snapshot sizes land in finite buckets: with the exporter's default boundaries (up to 10,000) every snapshot fell
    /// in +Inf, and no quantile of their size could be read.
    /// </summary>
    [Fact]
    public async Task SnapshotSizesFallInFiniteBuckets()
    {
        await using var cluster = new LocalCluster(output, settings: new Dictionary<string, string> { ["SnapshotEntries"] = "100" });
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        await using (var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}"))
        {
            var db = redis.GetDatabase();
            // Random bytes: snapshots are compressed.
            var random = new Random(300);
            await Task.WhenAll(Enumerable.Range(0, 300).Select(i =>
            {
                var value = new byte[1024];
                random.NextBytes(value);
                return db.StringSetAsync($"snap{i}", value);
            }));
        }

        using var http = new HttpClient();
        var text = "";
        await Eventually.WaitAsync(async () =>
        {
            text = await http.GetStringAsync($"http://127.0.0.1:{cluster[leader].HttpPort}/metrics");
            // The first snapshot may come before most writes (5,477 B seen): wait for one that holds 100 of them.
            return text.Contains("dcache_snapshot_size_bytes_sum", StringComparison.Ordinal) && SampleValue(text, "dcache_snapshot_size_bytes_sum") > 100 * 1024;
        }, TimeSpan.FromSeconds(30), "a snapshot of at least 100 keys of 1 KiB written by the leader");

        var count = SampleValue(text, "dcache_snapshot_size_bytes_count");
        var finiteBuckets = text.Split('\n')
            .Where(l => l.StartsWith("dcache_snapshot_size_bytes_bucket{", StringComparison.Ordinal) && !l.Contains("le=\"+Inf\"", StringComparison.Ordinal))
            .Select(l => l[(l.LastIndexOf(' ') + 1)..])
            .Select(v => double.Parse(v, CultureInfo.InvariantCulture))
            .ToList();
        Assert.NotEmpty(finiteBuckets);
        Assert.True(finiteBuckets.Max() == count, $"{count} snapshots, {finiteBuckets.Max()} of them in a finite bucket:\n{text}");
    }

    private static async Task<Dictionary<ulong, (double Changes, double Term)>> ScrapeLeaderCountersAsync(LocalCluster cluster, HttpClient http)
    {
        var counters = new Dictionary<ulong, (double Changes, double Term)>();
        foreach (var node in cluster.Nodes.Values)
        {
            var text = await http.GetStringAsync($"http://127.0.0.1:{node.HttpPort}/metrics");
            counters[node.Id] = (SampleValue(text, "dcache_raft_leader_changes_total"), SampleValue(text, "dcache_raft_term"));
        }

        return counters;
    }

    private static double SampleValue(string metrics, string name)
    {
        var line = metrics.Split('\n').Single(l => l.StartsWith(name + "{", StringComparison.Ordinal) || l.StartsWith(name + " ", StringComparison.Ordinal));
        return double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
    }
}
