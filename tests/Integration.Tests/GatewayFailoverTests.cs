using System.Collections.Concurrent;
using System.Diagnostics;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class GatewayFailoverTests(ITestOutputHelper output)
{
    // The error prefixes docs/protocol.md documents for cluster-level failures.
    internal static readonly string[] DocumentedErrorPrefixes = ["TRYAGAIN ", "UNKNOWN "];

    [Fact]
    public async Task KillingTheLeaderUnder50StackExchangeRedisWritersLosesNothingAndAppliesNoIncrTwice()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));

        var connections = new List<ConnectionMultiplexer>();
        for (var i = 0; i < 5; i++)
        {
            connections.Add(await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}"));
        }

        var clock = Stopwatch.StartNew();
        var acknowledged = new ConcurrentDictionary<string, string>();
        var acknowledgedAt = new ConcurrentQueue<TimeSpan>();
        var errors = new ConcurrentQueue<string>();
        var incrAcknowledged = new int[50];
        var incrUnknown = new int[50];
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(2)); // bound, whatever happens
        var writers = Enumerable.Range(0, 50).Select(w => Task.Run(async () =>
        {
            var db = connections[w % connections.Count].GetDatabase();
            for (var n = 0; n < 100_000 && !stop.IsCancellationRequested; n++)
            {
                var key = $"fw{w}:{n}";
                try
                {
                    if (await db.StringSetAsync(key, $"v{n}"))
                    {
                        acknowledged[key] = $"v{n}";
                        acknowledgedAt.Enqueue(clock.Elapsed);
                    }
                }
                catch (RedisServerException ex)
                {
                    errors.Enqueue(ex.Message);
                }

                try
                {
                    await db.StringIncrementAsync($"counter:{w}");
                    Interlocked.Increment(ref incrAcknowledged[w]);
                }
                catch (RedisServerException ex)
                {
                    errors.Enqueue(ex.Message);
                    if (ex.Message.StartsWith("UNKNOWN ", StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref incrUnknown[w]);
                    }
                }
            }
        })).ToArray();

        await Eventually.WaitAsync(() => acknowledged.Count >= 500, TimeSpan.FromSeconds(60), "500 acknowledged writes before the kill");
        cluster[leader].Kill();
        var killedAt = clock.Elapsed;
        await Eventually.WaitAsync(() => acknowledgedAt.Any(t => t > killedAt), TimeSpan.FromSeconds(15), "a write acknowledged after the leader was killed");
        var atKill = acknowledged.Count;
        await Eventually.WaitAsync(() => acknowledged.Count >= atKill + 500, TimeSpan.FromSeconds(60), "500 more acknowledged writes after the kill");
        await stop.CancelAsync();
        await Task.WhenAll(writers);

        // The pause writers saw: the longest stretch without any acknowledgement, from the kill on.
        var after = acknowledgedAt.Where(t => t >= killedAt).Order().Prepend(killedAt).ToList();
        var resumedAfter = after.Zip(after.Skip(1), (a, b) => b - a).Max();
        output.WriteLine($"longest pause in acknowledgements after the leader was killed: {resumedAfter.TotalMilliseconds:F0} ms");

        Assert.True(resumedAfter < TimeSpan.FromSeconds(3), $"writes resumed only after {resumedAfter.TotalSeconds:F2} s");
        var undocumented = errors.Where(e => !DocumentedErrorPrefixes.Any(p => e.StartsWith(p, StringComparison.Ordinal))).Distinct().ToList();
        Assert.True(undocumented.Count == 0, "errors outside the documented ones: " + string.Join(" | ", undocumented.Take(5)));
        output.WriteLine($"{acknowledged.Count} writes acknowledged, {errors.Count} documented errors seen");

        // No acknowledged write lost; no INCR applied twice (and none acknowledged but missing).
        var db = connections[0].GetDatabase();
        foreach (var batch in acknowledged.Keys.Chunk(500))
        {
            var values = await db.StringGetAsync(batch.Select(k => (RedisKey)k).ToArray());
            for (var i = 0; i < batch.Length; i++)
            {
                Assert.True(values[i] == acknowledged[batch[i]], $"acknowledged write {batch[i]} lost (read '{values[i]}')");
            }
        }

        for (var w = 0; w < 50; w++)
        {
            var counter = (long)await db.StringGetAsync($"counter:{w}");
            Assert.InRange(counter, incrAcknowledged[w], incrAcknowledged[w] + incrUnknown[w]);
        }

        foreach (var connection in connections)
        {
            await connection.DisposeAsync();
        }
    }
}
