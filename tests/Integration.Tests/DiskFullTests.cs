using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class DiskFullTests(ITestOutputHelper output)
{
    /// <summary>Exit code of a node whose Raft loop failed (NodeRuntime.FailedExitCode).</summary>
    private const int FailedExitCode = 3;

    /// <summary>
    /// A follower whose disk fills up must stop (fail-stop, a clear cause, a non-zero exit code) rather than live on
    /// as a process that answers status and takes commands but never commits; the other two keep the cluster
    /// writable; once space is freed the node restarts from what reached its disk and catches up, losing nothing.
    /// </summary>
    [Fact]
    public async Task ANodeWhoseDiskFillsStopsWithTheCauseAndAfterSpaceIsFreedCatchesUp()
    {
        await using var cluster = new LocalCluster(output);
        var full = cluster.Nodes.Keys.Max();
        using var disk = await SmallDisk.MountAsync(cluster[full].DataDirectory, megabytes: 16);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        if (leader == full)
        {
            // Starve a follower, so the fill below runs against one steady leader.
            var others = cluster.Nodes.Keys.Where(id => id != full).ToList();
            var moved = await Dcachectl.RunAsync(output, ["leader", "transfer", "--to", LocalCluster.Text((int)others[0]), .. cluster.CtlOptions()]);
            Assert.True(moved.Exit == 0, $"leader transfer failed: {moved}");
        }

        var acknowledged = new System.Collections.Concurrent.ConcurrentDictionary<string, string>();
        var value = new string('v', 8 * 1024);
        // Eight writers at once, so that the leader's and the follower's synced writes carry several entries each: one
        // writer alone took about 15 s on a quiet machine, and over 90 s beside the rest of the suite on a slow one.
        const int FillWriters = 8;
        var deadline = DateTime.UtcNow.AddSeconds(300);
        var attempted = 0;
        var next = -1;
        var writeTo = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(20));
        // 16 MiB holds about 2,000 entries of 8 KiB: the node must have stopped well before 6,000 writes.
        await Task.WhenAll(Enumerable.Range(0, FillWriters).Select(_ => Task.Run(async () =>
        {
            for (var i = Interlocked.Increment(ref next); i < 6_000 && cluster[full].IsRunning && DateTime.UtcNow < deadline; i = Interlocked.Increment(ref next))
            {
                Interlocked.Increment(ref attempted);
                var key = $"fill-{i}";
                var reply = await TryWriteAsync(cluster, Volatile.Read(ref writeTo), key, $"{i}:{value}");
                if (reply is { Ok: true })
                {
                    acknowledged[key] = $"{i}:{value}";
                }
                else
                {
                    Volatile.Write(ref writeTo, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(20)));
                }
            }
        })));

        await Eventually.WaitAsync(() => !cluster[full].IsRunning, TimeSpan.FromSeconds(30), $"node {full} to stop once its disk is full ({attempted} writes tried, {acknowledged.Count} acknowledged)");
        var stoppedOutput = cluster[full].RecentOutput(200);
        Assert.True(cluster[full].ExitCode == FailedExitCode, $"node {full} exited with {cluster[full].ExitCode}, not {FailedExitCode}:{Environment.NewLine}{stoppedOutput}");
        // The log's write names ENOSPC; should an election's term write reach SQLite first, its words are these.
        Assert.True(
            stoppedOutput.Contains("No space left on device", StringComparison.Ordinal) || stoppedOutput.Contains("database or disk is full", StringComparison.Ordinal),
            $"node {full}'s output does not name the full disk:{Environment.NewLine}{stoppedOutput}");
        Assert.Contains($"exit code {FailedExitCode}", stoppedOutput, StringComparison.Ordinal);
        output.WriteLine($"node {full} stopped after {acknowledged.Count} acknowledged writes");

        // The other two are a majority: writes go on.
        for (var i = 0; i < 50; i++)
        {
            var key = $"after-{i}";
            var reply = await TryWriteAsync(cluster, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(20)), key, $"after {i}");
            Assert.True(reply is { Ok: true }, $"a write with node {full} stopped failed: {reply?.ToString() ?? "no reply"}");
            acknowledged[key] = $"after {i}";
        }

        await disk.GrowAsync(megabytes: 512);
        cluster[full].Start();
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(60));
        var missing = await Verify.MissingAsync(cluster, full, acknowledged);
        Assert.True(missing.Count == 0, $"node {full} lacks {missing.Count} acknowledged writes after its restart, e.g. {string.Join(", ", missing.Take(5))}");
        await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(30));
    }

    /// <summary>A write at <paramref name="leader"/>; null when the call itself failed (e.g. that node just stopped).</summary>
    private static async Task<Reply?> TryWriteAsync(LocalCluster cluster, ulong leader, string key, string value)
    {
        try
        {
            return await cluster.ExecuteAsync(leader, Commands.Set(key, value));
        }
        catch (Grpc.Core.RpcException)
        {
            return null;
        }
    }
}
