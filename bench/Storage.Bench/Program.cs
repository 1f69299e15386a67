using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Dcache.Raft;
using Dcache.Storage;

namespace Dcache.Storage.Bench;

/// <summary>
/// Storage benchmark, bounded in time and count. First the disk's own rate of 4 KiB write + fdatasync (the
/// reference every figure is compared with), then durable appends through <see cref="FasterRaftStorage"/> shaped
/// like a node: N proposers each push an entry into a channel and wait for it to be durable; one driver loop
/// (the Raft driver's role) drains everything pending into one Save per batch.
/// Usage: dotnet Dcache.Storage.Bench.dll [--seconds S] [--dir DIRECTORY] [--spin]
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var seconds = 3.0;
        var root = Path.GetTempPath();
        var wait = CommitWaitMode.Block;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--seconds": seconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--dir": root = args[++i]; break;
                case "--spin": wait = CommitWaitMode.Spin; break;
                default: Console.Error.WriteLine($"unknown argument {args[i]}"); return 2;
            }
        }

        var duration = TimeSpan.FromSeconds(seconds);
        var (syncRate, syncP50, syncP99) = MeasureFdatasync(root, duration);
        Console.WriteLine(I($"disk: 4 KiB write + fdatasync: {syncRate:F0}/s, p50 {syncP50:F3} ms, p99 {syncP99:F3} ms"));
        Console.WriteLine(I($"commit wait: {wait}; {seconds} s per row"));
        Console.WriteLine();
        Console.WriteLine("| proposers | entry bytes | durable entries/s | commits/s | entries/commit | p50 ms | p99 ms | commits/s ÷ fdatasync/s |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var entryBytes in new[] { 100, 1024 })
        {
            foreach (var proposers in new[] { 1, 16, 256 })
            {
                var row = MeasureAppends(root, proposers, entryBytes, duration, wait);
                Console.WriteLine(I($"| {proposers} | {entryBytes} | {row.EntriesPerSecond:F0} | {row.CommitsPerSecond:F0} | {row.EntriesPerCommit:F1} | {row.P50:F3} | {row.P99:F3} | {row.CommitsPerSecond / syncRate:F2} |"));
            }
        }

        return 0;
    }

    private sealed record Row(double EntriesPerSecond, double CommitsPerSecond, double EntriesPerCommit, double P50, double P99);

    private static string I(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    /// <summary>The disk's own durable-write rate: 4 KiB writes, each followed by fdatasync, into a preallocated file.</summary>
    private static (double Rate, double P50, double P99) MeasureFdatasync(string root, TimeSpan duration)
    {
        var path = Path.Combine(root, $"dcache-bench-fdatasync-{Guid.NewGuid():N}");
        try
        {
            using var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
            const int fileSize = 16 << 20;
            RandomAccess.SetLength(handle, fileSize);
            RandomAccess.Write(handle, new byte[fileSize], 0); // lay the file out, as fio does
            NativeFileSync.DataSync(handle);
            var block = new byte[4096];
            Random.Shared.NextBytes(block);
            var latencies = new List<double>();
            var total = Stopwatch.StartNew();
            long offset = 0;
            while (total.Elapsed < duration && latencies.Count < 1_000_000)
            {
                var start = Stopwatch.GetTimestamp();
                RandomAccess.Write(handle, block, offset);
                NativeFileSync.DataSync(handle);
                latencies.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                offset = (offset + block.Length) % fileSize;
            }

            latencies.Sort();
            return (latencies.Count / total.Elapsed.TotalSeconds, Percentile(latencies, 0.50), Percentile(latencies, 0.99));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private readonly record struct Proposal(ReadOnlyMemory<byte> Data, TaskCompletionSource Done);

    private static Row MeasureAppends(string root, int proposers, int entryBytes, TimeSpan duration, CommitWaitMode wait)
    {
        var directory = Path.Combine(root, $"dcache-bench-{Guid.NewGuid():N}");
        try
        {
            using var storage = FasterRaftStorage.Open(new StorageOptions { DataDirectory = directory, CommitWait = wait });
            var channel = Channel.CreateUnbounded<Proposal>(new UnboundedChannelOptions { SingleReader = true });
            using var stop = new CancellationTokenSource();
            long commits = 0, entries = 0;

            // The driver: wait for work, take everything pending, one Save (one durable commit), complete them all.
            var driver = new Thread(() =>
            {
                var batch = new List<Entry>();
                var waiting = new List<TaskCompletionSource>();
                ulong index = 0;
                while (channel.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
                {
                    while (channel.Reader.TryRead(out var proposal))
                    {
                        batch.Add(new Entry(++index, 1, EntryType.Normal, proposal.Data));
                        waiting.Add(proposal.Done);
                    }

                    storage.Save(new HardState(1, 1, index - (ulong)batch.Count), batch, null);
                    commits++;
                    entries += batch.Count;
                    foreach (var done in waiting)
                    {
                        done.SetResult();
                    }

                    batch.Clear();
                    waiting.Clear();
                }
            })
            { IsBackground = true, Name = "raft-driver" };
            driver.Start();

            var latencies = new List<double>[proposers];
            var payload = new byte[entryBytes];
            Random.Shared.NextBytes(payload);
            var clock = Stopwatch.StartNew();
            var tasks = Enumerable.Range(0, proposers).Select(p => Task.Run(async () =>
            {
                var mine = latencies[p] = [];
                while (!stop.IsCancellationRequested && mine.Count < 2_000_000 / proposers)
                {
                    var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    var start = Stopwatch.GetTimestamp();
                    channel.Writer.TryWrite(new Proposal(payload, done));
                    await done.Task;
                    mine.Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
            })).ToArray();

            stop.CancelAfter(duration);
            Task.WaitAll(tasks);
            var elapsed = clock.Elapsed.TotalSeconds;
            channel.Writer.Complete();
            driver.Join();
            var all = latencies.SelectMany(l => l).ToList();
            all.Sort();
            return new Row(entries / elapsed, commits / elapsed, (double)entries / commits, Percentile(all, 0.50), Percentile(all, 0.99));
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    private static double Percentile(List<double> sorted, double p) =>
        sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)(p * sorted.Count))];
}
