using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>Damage the files on disk and check what opening (and <see cref="StorageVerifier"/>) makes of it.</summary>
public sealed class FaultInjectionTests : IDisposable
{
    private readonly TempDirectory _directory = new();

    private StorageOptions Options => FasterStorageContractTests.SmallOptions(_directory.Path);

    public void Dispose() => _directory.Dispose();

    private static List<Entry> Entries(ulong from, ulong to, ulong term) =>
        [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => new Entry((ulong)i, term, EntryType.Normal, new byte[] { 1, 2, 3, (byte)i, 5, 6, 7, 8 }))];

    [Fact]
    public void A_flipped_byte_inside_a_committed_record_stops_open_naming_file_and_offset()
    {
        string segmentPath;
        long fileOffset;
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 10), Entries(1, 20, 1), null);
            var address = storage.AddressOf(7);
            segmentPath = storage.Geometry.SegmentPath(storage.Geometry.SegmentOf(address));
            fileOffset = storage.Geometry.FileOffsetOf(address);
        }

        // A byte of entry 7's payload (header 4 + frame 16 + index/term 16 = 36 bytes in).
        FlipByte(segmentPath, fileOffset + 36 + 2);

        var error = Assert.Throws<StorageCorruptionException>(() => FasterRaftStorage.Open(Options).Dispose());
        Assert.Equal(segmentPath, error.FilePath);
        Assert.Equal(fileOffset, error.FileOffset);
        Assert.Contains(segmentPath, error.Message, StringComparison.Ordinal);
        Assert.Contains($"offset {fileOffset}", error.Message, StringComparison.Ordinal);
        Assert.Contains("checksum", error.Message, StringComparison.Ordinal);

        var report = StorageVerifier.Verify(Options);
        Assert.False(report.IsHealthy);
        Assert.Contains(report.Problems, p => p.Contains(segmentPath, StringComparison.Ordinal) && p.Contains($"offset {fileOffset}", StringComparison.Ordinal));
    }

    [Fact]
    public void A_flipped_length_header_inside_the_committed_range_is_reported_too()
    {
        long fileOffset;
        string segmentPath;
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(null, Entries(1, 5, 1), null);
            var address = storage.AddressOf(3);
            segmentPath = storage.Geometry.SegmentPath(storage.Geometry.SegmentOf(address));
            fileOffset = storage.Geometry.FileOffsetOf(address);
        }

        FlipByte(segmentPath, fileOffset);
        var error = Assert.Throws<StorageCorruptionException>(() => FasterRaftStorage.Open(Options).Dispose());
        Assert.Equal(segmentPath, error.FilePath);
        Assert.Equal(fileOffset, error.FileOffset);
    }

    [Fact]
    public void A_torn_tail_after_the_commit_point_is_dropped_silently_and_the_log_continues()
    {
        long tail;
        LogGeometry geometry;
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 3), Entries(1, 5, 1), null);
            tail = storage.TailAddress;
            geometry = storage.Geometry;
        }

        // What a write cut short leaves: a plausible length header and half a record of garbage after the end.
        var garbage = new byte[60];
        BitConverter.TryWriteBytes(garbage, 48);
        new Random(1).NextBytes(garbage.AsSpan(4));
        WriteAt(geometry.SegmentPath(geometry.SegmentOf(tail)), geometry.FileOffsetOf(tail), garbage);
        Assert.Contains(StorageVerifier.Verify(Options).Notes, n => n.Contains("torn tail", StringComparison.Ordinal));

        using (var storage = FasterRaftStorage.Open(Options))
        {
            Assert.Equal(5UL, storage.LastIndex);
            Assert.Equal(new HardState(1, 1, 3), storage.HardState);
            storage.Save(null, Entries(6, 8, 1), null);
        }

        using (var storage = FasterRaftStorage.Open(Options))
        {
            var all = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, storage.TryGetEntries(1, 9, ulong.MaxValue, all));
            Assert.Equal(Enumerable.Range(1, 8).Select(i => (ulong)i), all.Select(e => e.Index));
        }

        Assert.True(StorageVerifier.Verify(Options).IsHealthy);
    }

    [Fact]
    public void Corruption_past_the_last_synced_commit_hint_ends_the_log_there()
    {
        // Without hints (as after a power cut that lost them) everything after the synced hint is "tail": a damaged
        // record there is indistinguishable from a torn write, so the log ends before it (nothing acknowledged
        // can be there in a real power cut: the write of an acknowledged commit completed, so it is intact).
        var options = Options;
        options.WriteCommitHints = false;
        long address;
        LogGeometry geometry;
        using (var storage = FasterRaftStorage.Open(options))
        {
            storage.Save(null, Entries(1, 4, 1), null);
            storage.Save(null, Entries(5, 8, 1), null);
            address = storage.AddressOf(6);
            geometry = storage.Geometry;
        }

        FlipByte(geometry.SegmentPath(geometry.SegmentOf(address)), geometry.FileOffsetOf(address) + 30);
        using var reopened = FasterRaftStorage.Open(options);
        Assert.Equal(5UL, reopened.LastIndex);
    }

    [Fact]
    public void A_damaged_record_past_the_last_synced_commit_hint_with_data_written_after_its_page_is_corruption()
    {
        // A torn write damages only the last page written; a damaged record with later pages (here later segment
        // files too) written after it is damage to entries that were durable. Cutting the log there would drop them
        // silently, acknowledged or not: the node refuses to start instead, and the files are left as they are.
        var options = Options;
        options.WriteCommitHints = false;
        long address;
        LogGeometry geometry;
        using (var storage = FasterRaftStorage.Open(options))
        {
            for (ulong from = 1; from <= 200; from += 20)
            {
                storage.Save(null, Entries(from, from + 19, 1), null);
            }

            address = storage.AddressOf(6);
            geometry = storage.Geometry;
        }

        Assert.True(LogScanner.ExistingSegments(geometry).Count() >= 3, "the entries should span several segment files");
        var segments = LogScanner.ExistingSegments(geometry).Order().ToList();
        FlipByte(geometry.SegmentPath(geometry.SegmentOf(address)), geometry.FileOffsetOf(address) + 30);

        var refused = Assert.Throws<StorageCorruptionException>(() => FasterRaftStorage.Open(options));
        Assert.Contains("not a torn write", refused.Message, StringComparison.Ordinal);
        Assert.Equal(segments, LogScanner.ExistingSegments(geometry).Order().ToList());
        Assert.False(StorageVerifier.Verify(options).IsHealthy);
    }

    [Fact]
    public void A_follower_overwrite_survives_a_crash_image()
    {
        using var crashImage = new TempDirectory("dcache-crash-image");
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 3), Entries(1, 10, 1), null);
            storage.Save(new HardState(2, 2, 3), Entries(5, 7, 2), null);

            // Copy the files while the log is still open: exactly what a crash at this moment leaves on disk.
            CopyDirectory(_directory.Path, crashImage.Path);
        }

        using var reopened = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(crashImage.Path));
        var all = new List<Entry>();
        Assert.Equal(LogReadStatus.Ok, reopened.TryGetEntries(1, reopened.LastIndex + 1, ulong.MaxValue, all));
        Assert.Equal([1UL, 1, 1, 1, 2, 2, 2], all.Select(e => e.Term));
        Assert.Equal(7UL, reopened.LastIndex);
        Assert.Equal(new HardState(2, 2, 3), reopened.HardState);
    }

    [Fact]
    public void A_commit_index_saved_alone_is_written_out_by_a_clean_close()
    {
        using var crashImage = new TempDirectory("dcache-crash-image");
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 3), Entries(1, 10, 1), null);
            storage.Save(new HardState(1, 1, 7), [], null);
            CopyDirectory(_directory.Path, crashImage.Path);
        }

        // A crash here would lose the commit index saved alone (it waits for the next sync), so it is the close that
        // writes it out.
        using (var crashed = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(crashImage.Path)))
        {
            Assert.Equal(new HardState(1, 1, 3), crashed.HardState);
        }

        using var reopened = FasterRaftStorage.Open(Options);
        Assert.Equal(new HardState(1, 1, 7), reopened.HardState);
        Assert.Equal(10UL, reopened.LastIndex);
    }

    [Fact]
    public void A_commit_index_saved_alone_survives_a_crash_once_synced_or_when_it_commits_a_membership_change()
    {
        using var afterMembershipCommit = new TempDirectory("dcache-crash-image");
        using var afterAppend = new TempDirectory("dcache-crash-image");
        var entries = Entries(1, 10, 1);
        entries[7] = entries[7] with { Type = EntryType.ConfChange };
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 3), entries, null);
            storage.Save(new HardState(1, 1, 7), [], null);
            storage.Save(new HardState(1, 1, 8), [], null);
            CopyDirectory(_directory.Path, afterMembershipCommit.Path);

            // A lazily written commit index becomes durable with the next save that syncs the log, even one that
            // does not move the commit index itself.
            storage.Save(new HardState(1, 1, 9), [], null);
            storage.Save(new HardState(1, 1, 9), Entries(11, 12, 1), null);
            CopyDirectory(_directory.Path, afterAppend.Path);
        }

        using (var crashed = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(afterMembershipCommit.Path)))
        {
            Assert.Equal(8UL, crashed.HardState.Commit);
        }

        using var appended = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(afterAppend.Path));
        Assert.Equal(9UL, appended.HardState.Commit);
        Assert.Equal(12UL, appended.LastIndex);
    }

    [Fact]
    public void A_commit_index_recorded_by_a_snapshot_survives_a_crash_that_loses_the_lazily_written_commit_record()
    {
        using var crashImage = new TempDirectory("dcache-crash-image");
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 3), Entries(1, 10, 1), null);
            storage.Save(new HardState(1, 1, 7), [], null);

            // A snapshot that keeps every entry (a trail for slow followers) moves no head: the replay base with
            // commit 7 is synced, the commit record saved alone is not.
            storage.CreateSnapshot(new SnapshotMetadata(5, 1, Membership.Of([1UL])), 0);
            CopyDirectory(_directory.Path, crashImage.Path);
        }

        // Replay starts from the replay base's commit; the older commit record in the log must not take it back.
        using var crashed = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(crashImage.Path));
        Assert.Equal(7UL, crashed.HardState.Commit);
        Assert.Equal(5UL, crashed.Snapshot.Index);
    }

    [Theory]
    [InlineData(2UL, 15UL)]
    [InlineData(1UL, 20UL)]
    public void A_snapshot_install_keeps_or_drops_the_suffix_as_before_when_the_head_move_is_torn(ulong snapshotTerm, ulong lastIndex)
    {
        // Entries 11-20 of term 1 are not committed. A leader's snapshot at 15 of term 2 does not match entry 15, so
        // the install drops them; one of term 1 matches, and they stay. The install persists the new replay base
        // (compaction point 15) in one commit slot, then moves the log's head in the next: a crash that tears that
        // second slot write leaves the new replay base with the old head, and replay reads the suffix again.
        using var crashImage = new TempDirectory("dcache-crash-image");
        var snapshot = new SnapshotMetadata(15, snapshotTerm, Membership.Of([1UL, 2, 3]));
        string commitFile;
        using (var storage = FasterRaftStorage.Open(Options))
        {
            storage.Save(new HardState(1, 1, 10), Entries(1, 20, 1), null);
            storage.Save(new HardState(2, 2, 15), [], snapshot);
            Assert.Equal(lastIndex, storage.LastIndex);
            CopyDirectory(_directory.Path, crashImage.Path);
            commitFile = Path.Combine(crashImage.Path, Path.GetRelativePath(_directory.Path, DurableLogCommitManager.MetadataPath(storage.Geometry)));
        }

        TearNewestCommitSlot(commitFile);

        using var reopened = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(crashImage.Path));
        Assert.Equal(snapshot.Index, reopened.Snapshot.Index);
        Assert.Equal(snapshot.Term, reopened.Snapshot.Term);
        Assert.Equal(16UL, reopened.FirstIndex);
        Assert.Equal(lastIndex, reopened.LastIndex);
        Assert.Equal(LogReadStatus.Ok, reopened.TryGetTerm(15, out var term));
        Assert.Equal(snapshotTerm, term);
        Assert.True(StorageVerifier.Verify(FasterStorageContractTests.SmallOptions(crashImage.Path)).IsHealthy);
    }

    /// <summary>Damages the commit metadata slot with the highest sequence number, as a write of it cut short would.</summary>
    private static void TearNewestCommitSlot(string path)
    {
        const int slotSize = 4096;
        var slots = File.ReadAllBytes(path);
        var sequences = Enumerable.Range(0, 2).Select(i => BitConverter.ToInt64(slots, (i * slotSize) + 8)).ToArray();
        FlipByte(path, (sequences[0] > sequences[1] ? 0 : slotSize) + 40);
    }

    internal static void FlipByte(string path, long offset)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var one = new byte[1];
        RandomAccess.Read(handle, one, offset);
        one[0] ^= 0x5A;
        RandomAccess.Write(handle, one, offset);
    }

    internal static void WriteAt(string path, long offset, byte[] data)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        RandomAccess.Write(handle, data, offset);
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var directory in Directory.EnumerateDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(directory.Replace(from, to, StringComparison.Ordinal));
        }

        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(file, file.Replace(from, to, StringComparison.Ordinal), overwrite: true);
        }
    }
}
