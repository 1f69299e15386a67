using System.Diagnostics;
using System.Globalization;
using Dcache.Cache;
using Xunit.Abstractions;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// What SCAN costs, printed rather than asserted (timings belong to benchmarks, not tests). 100,000 keys by default;
/// DCACHE_SCAN_COST_KEYS=1000000 for a larger run. See the figures with
/// <c>dotnet test tests/Node.Tests -c Release --filter ScanCostTests --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class ScanCostTests(ITestOutputHelper output)
{
    [Fact]
    public void Full_iterations_and_the_writes_beside_them_report_their_cost()
    {
        var keyCount = int.TryParse(Environment.GetEnvironmentVariable("DCACHE_SCAN_COST_KEYS"), CultureInfo.InvariantCulture, out var configured) ? configured : 100_000;
        var scanned = new CacheHarness();
        var neverScanned = new CacheHarness();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < keyCount; i++)
        {
            scanned.Set("key:" + i, "a value of 20 bytes.");
        }

        Report($"{keyCount:N0} SETs applied (no index yet)", clock.Elapsed, keyCount, "per SET");
        for (var i = 0; i < keyCount; i++)
        {
            neverScanned.Set("key:" + i, "a value of 20 bytes.");
        }

        clock.Restart();
        scanned.Machine.Scan(0, 10, scanned.NowMs);
        Report("first SCAN (builds the index)", clock.Elapsed);

        foreach (var count in new[] { 10, 1_000 })
        {
            var (calls, keys, elapsed, slowest) = Iterate(scanned.Machine, count, scanned.NowMs);
            Assert.Equal(keyCount, keys);
            Report($"full iteration, COUNT {count}: {calls:N0} calls", elapsed, calls, $"per call (slowest {slowest.TotalMicroseconds:N0} µs)");
        }

        // Writes beside an index cost a list append (new key) or a mark (removed key): compare with a machine without one.
        var writes = Math.Max(1, keyCount / 10);
        foreach (var (name, cache) in new[] { ("with an index", scanned), ("without an index", neverScanned) })
        {
            clock.Restart();
            for (var i = 0; i < writes; i++)
            {
                cache.Set("new:" + i, "a value of 20 bytes.");
                cache.Set("key:" + i, "rewritten");
                cache.Delete("key:" + (keyCount - 1 - i));
            }

            Report($"{writes:N0} x (SET new key, SET existing key, DEL) {name}", clock.Elapsed, writes * 3, "per write");
        }

        clock.Restart();
        scanned.Machine.Scan(0, 10, scanned.NowMs);
        Report($"next SCAN, placing the {writes:N0} keys created since the last", clock.Elapsed);

        // An application iterating while it writes: ten new keys between calls.
        var created = 0;
        var gen2 = GC.CollectionCount(2);
        var gen0 = GC.CollectionCount(0);
        var interleavedCalls = 0;
        var interleavedScan = TimeSpan.Zero;
        var slowestInterleaved = TimeSpan.Zero;
        ulong cursor = 0;
        do
        {
            for (var i = 0; i < 10; i++)
            {
                scanned.Set("during:" + created++, "v");
            }

            clock.Restart();
            cursor = scanned.Machine.Scan(cursor, 10, scanned.NowMs).NextCursor;
            var elapsed = clock.Elapsed;
            interleavedScan += elapsed;
            slowestInterleaved = elapsed > slowestInterleaved ? elapsed : slowestInterleaved;
            interleavedCalls++;
        }
        while (cursor != 0);

        Report($"full iteration, COUNT 10, ten new keys between calls: {interleavedCalls:N0} calls", interleavedScan, interleavedCalls, $"per call (slowest {slowestInterleaved.TotalMicroseconds:N0} µs)");
        output.WriteLine($"GCs meanwhile: gen0 {GC.CollectionCount(0) - gen0}, gen2 {GC.CollectionCount(2) - gen2}");
    }

    private static (int Calls, int Keys, TimeSpan Elapsed, TimeSpan Slowest) Iterate(CacheStateMachine machine, int count, long nowMs)
    {
        var calls = 0;
        var keys = 0;
        var total = TimeSpan.Zero;
        var slowest = TimeSpan.Zero;
        ulong cursor = 0;
        var clock = new Stopwatch();
        do
        {
            clock.Restart();
            var page = machine.Scan(cursor, count, nowMs);
            var elapsed = clock.Elapsed;
            total += elapsed;
            slowest = elapsed > slowest ? elapsed : slowest;
            keys += page.Keys.Count;
            cursor = page.NextCursor;
            calls++;
        }
        while (cursor != 0);

        return (calls, keys, total, slowest);
    }

    private void Report(string what, TimeSpan elapsed, long operations = 0, string unit = "") =>
        output.WriteLine(operations > 0
            ? $"{what}: {elapsed.TotalMilliseconds:N1} ms, {elapsed.TotalNanoseconds / operations:N0} ns {unit}"
            : $"{what}: {elapsed.TotalMilliseconds:N1} ms");
}
