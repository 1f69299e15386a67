using Dcache.Integration.Tests.Support;
using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>The snapshot store on a disk that fills up for real (a small tmpfs: needs root, as the test command has).</summary>
public sealed class SnapshotStoreDiskFullTests
{
    /// <summary>
    /// A snapshot cut short by a full disk fails as a durable-write failure that names the store and the lack of room
    /// (the node stops on it, as on its Raft log's), not as FasterLog's bare commit failure, which callers took for a
    /// passing problem; and the store still closes.
    /// </summary>
    [Fact]
    public async Task A_snapshot_cut_short_by_a_full_disk_is_a_durable_write_failure_and_the_store_still_closes()
    {
        using var directory = new TempDirectory();
        using var disk = await SmallDisk.MountAsync(directory.Path, megabytes: 12);
        var options = new StorageOptions { DataDirectory = disk.Path };
        using var metadata = MetadataStore.Open(disk.Path);
        var store = SnapshotStore.Open(options, metadata);
        var data = new byte[64 * 1024];
        new Random(1).NextBytes(data);

        // Each snapshot is 2.5 MiB: the disk is full by the fifth.
        var written = Task.Run(() =>
        {
            for (ulong index = 1; index <= 10; index++)
            {
                using var writer = store.BeginSnapshot(new SnapshotMetadata(index, 1, Membership.Of([1UL])));
                for (var chunk = 0; chunk < 40; chunk++)
                {
                    writer.Write(data);
                }

                writer.Complete();
            }
        });

        var failure = await Assert.ThrowsAsync<StorageWriteException>(() => written.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("the snapshot store in", failure.Message, StringComparison.Ordinal);
        Assert.Contains("could not be written durably (No space left on device: ", failure.Message, StringComparison.Ordinal);
        await Task.Run(store.Dispose).WaitAsync(TimeSpan.FromSeconds(30));
    }
}
