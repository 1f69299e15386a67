using System.Diagnostics;
using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>The chaos suite's slow disk (StorageOptions.TestOnlySlowDiskFile) slows durable commits, and only while its file says so.</summary>
public sealed class TestOnlySlowDiskTests
{
    [Fact]
    public void EveryDurableCommitTakesAtLeastTheDelayInTheFileAndNoneWithoutIt()
    {
        using var directory = new TempDirectory("dcache-slow-disk");
        var switchFile = Path.Combine(directory.Path, "slow-disk");
        File.WriteAllText(switchFile, "80");
        using var storage = FasterRaftStorage.Open(new StorageOptions { DataDirectory = Path.Combine(directory.Path, "data"), TestOnlySlowDiskFile = switchFile });

        var clock = Stopwatch.StartNew();
        for (ulong i = 1; i <= 3; i++)
        {
            storage.Save(new HardState(1, 1, i - 1), [new Entry(i, 1, EntryType.Normal, new byte[] { 1, 2, 3 })], null);
        }

        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(3 * 80), $"three slowed commits took only {clock.ElapsedMilliseconds} ms");

        // A missing file means a fast disk again (read at the next re-read, at most 100 ms later).
        File.Delete(switchFile);
        var deadline = Stopwatch.StartNew();
        TimeSpan last;
        ulong index = 4;
        do
        {
            var one = Stopwatch.StartNew();
            storage.Save(null, [new Entry(index, 1, EntryType.Normal, new byte[] { 4 })], null);
            last = one.Elapsed;
            index++;
        }
        while (last >= TimeSpan.FromMilliseconds(80) && deadline.Elapsed < TimeSpan.FromSeconds(5));

        Assert.True(last < TimeSpan.FromMilliseconds(80), $"commits still slow {deadline.ElapsedMilliseconds} ms after the file was removed");
        Assert.Equal(index - 1, storage.LastIndex);
    }
}
