using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class DashboardTests(ITestOutputHelper output)
{
    /// <summary>
    /// A real Prometheus (Debian's package, installed by the test command) scrapes a 3-node cluster and its gateway
    /// under load; every PromQL expression of every dashboard in ops/grafana/dashboards must return at least one series.
    /// </summary>
    [Fact]
    public async Task EveryDashboardQueryReturnsDataFromARealPrometheusScrapingALoadedCluster()
    {
        var settings = new Dictionary<string, string> { ["SnapshotEntries"] = "200", ["SnapshotCatchUpEntries"] = "20" };
        await using var cluster = new LocalCluster(output, settings: settings);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        var prometheusPort = FreePorts.Allocate(1)[0];
        var config = Path.Combine(cluster.Root, "prometheus.yml");
        var lines = new List<string> { "global:", "  scrape_interval: 1s", "scrape_configs:", "  - job_name: dcache-node", "    static_configs:" };
        foreach (var node in cluster.Nodes.Values)
        {
            lines.Add($"      - targets: [\"127.0.0.1:{node.HttpPort}\"]");
            lines.Add($"        labels: {{ node: \"{node.Id}\" }}");
        }

        lines.AddRange(["  - job_name: dcache-gateway", "    static_configs:", $"      - targets: [\"127.0.0.1:{cluster.GatewayHttpPort}\"]", "        labels: { gateway: \"1\" }"]);
        await File.WriteAllLinesAsync(config, lines);
        using var prometheus = Process.Start(new ProcessStartInfo("prometheus")
        {
            ArgumentList =
            {
                $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(cluster.Root, "tsdb")}",
                $"--web.listen-address=127.0.0.1:{prometheusPort}", "--log.level=warn",
            },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        }) ?? throw new InvalidOperationException("cannot start prometheus; the test command installs it");
        prometheus.OutputDataReceived += (_, _) => { };
        prometheus.ErrorDataReceived += (_, e) => { if (e.Data is not null) { output.WriteLine("prometheus: " + e.Data); } };
        prometheus.BeginOutputReadLine();
        prometheus.BeginErrorReadLine();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{prometheusPort}") };
            await Eventually.WaitAsync(async () =>
            {
                using var doc = JsonDocument.Parse(await http.GetStringAsync("/api/v1/targets"));
                var active = doc.RootElement.GetProperty("data").GetProperty("activeTargets");
                return active.GetArrayLength() == 4 && active.EnumerateArray().All(t => t.GetProperty("health").GetString() == "up");
            }, TimeSpan.FromSeconds(60), "Prometheus to scrape every node and the gateway");

            // Load while Prometheus scrapes: writes (enough for snapshots), hits and misses. Bounded in count and time.
            await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
            var db = redis.GetDatabase();
            using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(90));
            var load = Task.Run(async () =>
            {
                for (var i = 0; i < 100_000 && !stop.IsCancellationRequested; i++)
                {
                    if (i % 3 == 0)
                    {
                        await db.StringSetAsync($"dash:{i % 500}", i, TimeSpan.FromMilliseconds(200));
                    }
                    else
                    {
                        await db.StringSetAsync($"dash:{i % 500}", i);
                    }

                    await db.StringGetAsync($"dash:{i % 700}");
                }
            });

            var expressions = DashboardExpressions().ToList();
            Assert.NotEmpty(expressions);
            foreach (var (file, title, expr) in expressions)
            {
                await Eventually.WaitAsync(async () =>
                {
                    var json = await http.GetStringAsync("/api/v1/query?query=" + Uri.EscapeDataString(expr));
                    using var doc = JsonDocument.Parse(json);
                    return doc.RootElement.GetProperty("status").GetString() == "success"
                        && doc.RootElement.GetProperty("data").GetProperty("result").GetArrayLength() > 0;
                }, TimeSpan.FromSeconds(45), $"'{title}' in {file} to return a series for: {expr}");
            }

            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{expressions.Count} dashboard expressions returned data"));
            await stop.CancelAsync();
            await load;
        }
        finally
        {
            prometheus.Kill(entireProcessTree: true);
            await prometheus.WaitForExitAsync();
        }
    }

    /// <summary>
    /// Grafana shows every series of a panel in the panel's unit unless an override for its query (refId) says
    /// otherwise: a snapshot's size in bytes drawn in seconds reads as days. Each query's unit must fit what it
    /// computes: seconds for a latency (a quantile, or a mean of a _seconds histogram), bytes for a _bytes metric,
    /// and neither for a count or a rate of one.
    /// </summary>
    [Fact]
    public void EveryDashboardQueryIsDrawnInTheUnitOfWhatItComputes()
    {
        var mismatches = new List<string>();
        var checkedQueries = 0;
        foreach (var file in Directory.GetFiles(Path.Combine(RepoPaths.Root, "ops", "grafana", "dashboards"), "*.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            foreach (var panel in doc.RootElement.GetProperty("panels").EnumerateArray())
            {
                if (!panel.TryGetProperty("targets", out var targets))
                {
                    continue;
                }

                var title = panel.GetProperty("title").GetString();
                var fieldConfig = panel.GetProperty("fieldConfig");
                var panelUnit = fieldConfig.GetProperty("defaults").TryGetProperty("unit", out var u) ? u.GetString() ?? "none" : "none";
                foreach (var target in targets.EnumerateArray())
                {
                    var expr = target.GetProperty("expr").GetString() ?? "";
                    var unit = UnitOverride(fieldConfig, target.GetProperty("refId").GetString() ?? "") ?? panelUnit;
                    var expected = ExpectedUnit(expr);
                    checkedQueries++;
                    if (expected is null ? unit is "s" or "bytes" : unit != expected)
                    {
                        mismatches.Add($"{Path.GetFileName(file)}, '{title}': {expr} is drawn in '{unit}', expected {expected ?? "neither s nor bytes"}");
                    }
                }
            }
        }

        Assert.True(checkedQueries > 0, "no dashboard queries found");
        Assert.True(mismatches.Count == 0, string.Join(Environment.NewLine, mismatches));
    }

    /// <summary>
    /// The unit a query's value is in; null for a count, a rate or a dimensionless gauge. A query that reads a
    /// histogram's _sum or _bucket series (a mean or a quantile, even of rates) is in the histogram's unit.
    /// </summary>
    private static string? ExpectedUnit(string expr)
    {
        if (!Regex.IsMatch(expr, @"\b\w+_(sum|bucket)\b") && Regex.IsMatch(expr, @"\b(rate|increase)\(\s*\w+_(count|total)\b"))
        {
            return null;
        }

        var metrics = Regex.Matches(expr, @"\bdcache_\w+").Select(m => Regex.Replace(m.Value, "_(bucket|sum|count|total)$", "")).Distinct().ToList();
        return metrics.Count > 0 && metrics.All(m => m.EndsWith("_seconds", StringComparison.Ordinal)) ? "s"
            : metrics.Count > 0 && metrics.All(m => m.EndsWith("_bytes", StringComparison.Ordinal)) ? "bytes"
            : null;
    }

    private static string? UnitOverride(JsonElement fieldConfig, string refId)
    {
        if (!fieldConfig.TryGetProperty("overrides", out var overrides))
        {
            return null;
        }

        foreach (var o in overrides.EnumerateArray())
        {
            var matcher = o.GetProperty("matcher");
            if (matcher.GetProperty("id").GetString() == "byFrameRefID" && matcher.GetProperty("options").GetString() == refId)
            {
                foreach (var property in o.GetProperty("properties").EnumerateArray())
                {
                    if (property.GetProperty("id").GetString() == "unit")
                    {
                        return property.GetProperty("value").GetString();
                    }
                }
            }
        }

        return null;
    }

    private static IEnumerable<(string File, string Title, string Expr)> DashboardExpressions()
    {
        foreach (var file in Directory.GetFiles(Path.Combine(RepoPaths.Root, "ops", "grafana", "dashboards"), "*.json"))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            foreach (var panel in doc.RootElement.GetProperty("panels").EnumerateArray())
            {
                if (!panel.TryGetProperty("targets", out var targets))
                {
                    continue;
                }

                foreach (var target in targets.EnumerateArray())
                {
                    if (target.TryGetProperty("expr", out var expr))
                    {
                        // Grafana's rate window (at least four scrape intervals); Prometheus itself does not know it.
                        var query = (expr.GetString() ?? "").Replace("$__rate_interval", "1m", StringComparison.Ordinal);
                        yield return (Path.GetFileName(file), panel.GetProperty("title").GetString() ?? "", query);
                    }
                }
            }
        }
    }
}
