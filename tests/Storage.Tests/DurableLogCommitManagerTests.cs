using FASTER.core;

namespace Dcache.Storage.Tests;

/// <summary>The commit file's two slots under a power cut: whatever happens to the writes made after the last sync, recovery finds that sync's state or a newer one.</summary>
public sealed class DurableLogCommitManagerTests : IDisposable
{
    private const int SlotSize = 4096;
    private readonly TempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Writes_after_a_sync_lost_or_torn_in_any_combination_never_take_recovery_back_before_that_sync(int unsyncedWrites)
    {
        var geometry = new LogGeometry(_directory.Path, "log", 12, 16);
        const long oldBegin = LogGeometry.FirstValidAddress;
        const long newBegin = 1L << 16; // segment 0 is deleted once this commit returns
        byte[] durable;
        byte[] final;
        using (var manager = new DurableLogCommitManager(geometry, syncEveryCommit: false))
        {
            for (var i = 1; i <= 3; i++)
            {
                manager.Commit(oldBegin, 1000 * i, Metadata(oldBegin, 1000 * i), i, forceWriteMetadata: false);
            }

            manager.Commit(newBegin, 70_000, Metadata(newBegin, 70_000), 4, forceWriteMetadata: false); // the begin moved: synced
            durable = File.ReadAllBytes(manager.FilePath);
            for (var i = 1; i <= unsyncedWrites; i++)
            {
                manager.Commit(newBegin, 70_000 + 1000 * i, Metadata(newBegin, 70_000 + 1000 * i), 4 + i, forceWriteMetadata: false);
            }

            final = File.ReadAllBytes(manager.FilePath);
        }

        // Each slot written since the sync may have reached the disk, not reached it, or been torn.
        foreach (var fate0 in Fates)
        {
            foreach (var fate1 in Fates)
            {
                var image = (byte[])final.Clone();
                ApplyFate(image, durable, 0, fate0);
                ApplyFate(image, durable, 1, fate1);
                File.WriteAllBytes(DurableLogCommitManager.MetadataPath(geometry), image);
                var recovered = DurableLogCommitManager.ReadRecovered(geometry);
                Assert.True(recovered is { BeginAddress: newBegin, UntilAddress: >= 70_000 },
                    $"slot 0 {fate0}, slot 1 {fate1} after {unsyncedWrites} unsynced write(s): recovered [{recovered?.BeginAddress}, {recovered?.UntilAddress})");
            }
        }
    }

    private static readonly string[] Fates = ["written", "lost", "torn"];

    private static void ApplyFate(byte[] image, byte[] durable, int slot, string fate)
    {
        var range = new Range(slot * SlotSize, (slot + 1) * SlotSize);
        if (image.AsSpan(range).SequenceEqual(durable.AsSpan(range)))
        {
            return; // not written since the sync: on the disk as it was
        }

        switch (fate)
        {
            case "lost":
                durable.AsSpan(range).CopyTo(image.AsSpan(range));
                break;
            case "torn":
                image[(slot * SlotSize) + 30] ^= 0xFF;
                break;
        }
    }

    private static byte[] Metadata(long begin, long until)
    {
        var info = new FasterLogRecoveryInfo();
        info.Initialize();
        info.BeginAddress = begin;
        info.UntilAddress = until;
        info.CommitNum = 1;
        return info.ToByteArray();
    }
}
