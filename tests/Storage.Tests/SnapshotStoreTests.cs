using Dcache.Raft;
using Xunit.Abstractions;

namespace Dcache.Storage.Tests;

public sealed class SnapshotStoreTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDirectory _directory = new();

    private StorageOptions Options => new()
    {
        DataDirectory = _directory.Path,
        SnapshotLog = new LogFileOptions { PageSizeBits = 14, MemorySizeBits = 16, SegmentSizeBits = 16 },
        SnapshotChunkBytes = 4000,
    };

    public void Dispose() => _directory.Dispose();

    // With members' addresses, so the catalogue is shown to keep them.
    private static readonly Membership Members = Membership.Of([1UL, 2UL, 3UL], [9UL], [KeyValuePair.Create(1UL, "http://127.0.0.1:7001"), KeyValuePair.Create(9UL, "http://[::1]:7009")]);

    /// <summary>Deterministic snapshot content: byte i of a snapshot with this seed.</summary>
    private static void Fill(Span<byte> into, long offset, int seed)
    {
        for (var i = 0; i < into.Length; i++)
        {
            into[i] = (byte)((offset + i) * 31 + seed);
        }
    }

    private static SnapshotCatalogueEntry WriteSnapshot(SnapshotStore store, ulong index, long size, int seed, Random random)
    {
        using var writer = store.BeginSnapshot(new SnapshotMetadata(index, index / 10 + 1, Members));
        long written = 0;
        var buffer = new byte[10_000];
        while (written < size)
        {
            var piece = (int)Math.Min(size - written, random.Next(1, buffer.Length));
            Fill(buffer.AsSpan(0, piece), written, seed);
            writer.Write(buffer.AsSpan(0, piece));
            written += piece;
        }

        return writer.Complete();
    }

    private static void AssertContent(SnapshotStore store, SnapshotCatalogueEntry entry, long size, int seed)
    {
        using var reader = store.OpenRead(entry);
        long offset = 0;
        var expected = new byte[8000];
        foreach (var chunk in reader.Chunks())
        {
            Assert.True(chunk.Length <= 4000, "a chunk is larger than the configured chunk size");
            Fill(expected.AsSpan(0, chunk.Length), offset, seed);
            Assert.True(chunk.Span.SequenceEqual(expected.AsSpan(0, chunk.Length)), $"snapshot {entry.Id} differs at {offset}");
            offset += chunk.Length;
        }

        Assert.Equal(size, offset);
    }

    [Fact]
    public async Task A_snapshot_being_written_when_the_store_closes_ends_with_ObjectDisposedException_and_is_not_kept()
    {
        // What a node stopping during an automatic snapshot does: the store closes under a writer still sending chunks.
        // Closing FasterLog under it once left the writer spinning inside FasterLog for good.
        using (var metadata = MetadataStore.Open(_directory.Path))
        {
            var store = SnapshotStore.Open(Options, metadata);
            var writing = new ManualResetEventSlim();
            Exception? failure = null;
            var writes = 0;
            var writer = new Thread(() =>
            {
                try
                {
                    using var snapshot = store.BeginSnapshot(new SnapshotMetadata(100, 2, Members));
                    var buffer = new byte[10_000];
                    // Far more than is written before the store closes (a bound, not a size that matters).
                    for (; writes < 200_000; writes++)
                    {
                        snapshot.Write(buffer);
                        writing.Set();
                    }

                    snapshot.Complete();
                }
                catch (Exception ex)
                {
                    failure = ex;
                }
            }) { IsBackground = true };
            writer.Start();
            Assert.True(writing.Wait(TimeSpan.FromSeconds(30)), "the writer did not start");
            await Task.Run(store.Dispose).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(writer.Join(TimeSpan.FromSeconds(30)), $"the writer is still inside the closed store after {writes} writes");
            Assert.IsType<ObjectDisposedException>(failure);
            Assert.True(writes < 200_000, "the writer finished before the store closed: the race was not exercised");
        }

        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            Assert.Empty(store.List());
            var entry = WriteSnapshot(store, 200, 50_000, 7, new Random(7));
            AssertContent(store, entry, 50_000, 7);
        }
    }

    [Fact]
    public void Snapshots_stream_in_and_out_in_chunks_survive_reopen_and_only_the_newest_two_are_kept()
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_SNAPSHOT_STORE_SEED") is { Length: > 0 } text
            ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay with DCACHE_SNAPSHOT_STORE_SEED={seed})");
        var random = new Random(seed);
        var sizes = new List<long>();
        var entries = new List<SnapshotCatalogueEntry>();
        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            for (var i = 0; i < 5; i++)
            {
                var size = random.Next(0, 300_000);
                sizes.Add(size);
                entries.Add(WriteSnapshot(store, (ulong)(100 * (i + 1)), size, i, random));
                AssertContent(store, entries[^1], size, i);
            }

            Assert.Equal([entries[4].Id, entries[3].Id], store.List().Select(e => e.Id));
            Assert.Equal(500UL, store.Latest!.Metadata.Index);
            Assert.Equal(Members, store.Latest.Metadata.Membership);
        }

        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            Assert.Equal([entries[4].Id, entries[3].Id], store.List().Select(e => e.Id));
            AssertContent(store, store.List()[0], sizes[4], 4);
            AssertContent(store, store.List()[1], sizes[3], 3);

            // The log's head moved past the dropped snapshots: their segment files are gone.
            var geometry = SnapshotStore.GeometryFor(Options);
            Assert.DoesNotContain(0, LogScanner.ExistingSegments(geometry));
            var next = WriteSnapshot(store, 600, 1234, 6, random);
            AssertContent(store, next, 1234, 6);
        }

        Assert.True(StorageVerifier.Verify(Options).IsHealthy, StorageVerifier.Verify(Options).ToString());
    }

    [Fact]
    public void The_snapshot_the_raft_log_starts_from_is_kept_until_the_log_moves_past_it()
    {
        var random = new Random(11);
        using var metadata = MetadataStore.Open(_directory.Path);
        using var store = SnapshotStore.Open(Options, metadata);
        ulong logBase = 100;
        store.LogBaseIndex = () => logBase;
        var first = WriteSnapshot(store, 100, 70_000, 1, random);
        var second = WriteSnapshot(store, 200, 70_000, 2, random);
        var third = WriteSnapshot(store, 300, 70_000, 3, random);
        var fourth = WriteSnapshot(store, 400, 70_000, 4, random);

        // Two newer ones than the log adopted: the newest two, and the one the log starts from (a restart needs it).
        Assert.Equal([fourth.Id, third.Id, first.Id], store.List().Select(e => e.Id));
        AssertContent(store, first, 70_000, 1);

        // Once the log starts from a newer one, the older is let go.
        logBase = 300;
        var fifth = WriteSnapshot(store, 500, 70_000, 5, random);
        Assert.Equal([fifth.Id, fourth.Id, third.Id], store.List().Select(e => e.Id));
        AssertContent(store, third, 70_000, 3);
        logBase = 500;
        var sixth = WriteSnapshot(store, 600, 70_000, 6, random);
        Assert.Equal([sixth.Id, fifth.Id], store.List().Select(e => e.Id));
        Assert.NotNull(second);
    }

    [Fact]
    public void An_abandoned_snapshot_is_never_catalogued_and_the_next_one_works()
    {
        var random = new Random(7);
        using var metadata = MetadataStore.Open(_directory.Path);
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            using (var writer = store.BeginSnapshot(new SnapshotMetadata(5, 1, Members)))
            {
                writer.Write(new byte[50_000]);
            }

            Assert.Empty(store.List());
            var entry = WriteSnapshot(store, 6, 20_000, 3, random);
            AssertContent(store, entry, 20_000, 3);
        }

        using var reopened = SnapshotStore.Open(Options, metadata);
        Assert.Single(reopened.List());
        AssertContent(reopened, reopened.List()[0], 20_000, 3);
    }

    [Fact]
    public void A_cancelled_snapshot_stops_at_its_next_chunk_is_never_catalogued_and_is_discarded_on_reopen()
    {
        var random = new Random(11);
        using var metadata = MetadataStore.Open(_directory.Path);
        SnapshotCatalogueEntry kept;
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            kept = WriteSnapshot(store, 6, 20_000, 3, random);
            using var stop = new CancellationTokenSource();
            using (var writer = store.BeginSnapshot(new SnapshotMetadata(9, 2, Members), stop.Token))
            {
                writer.Write(new byte[50_000]);
                stop.Cancel();
                // Within the chunk buffered: nothing is stored, and the next chunk is refused.
                writer.Write(new byte[100]);
                Assert.Throws<OperationCanceledException>(() => writer.Write(new byte[4_000]));
                Assert.Throws<OperationCanceledException>(() => writer.Complete());
            }

            Assert.Equal(kept.Id, Assert.Single(store.List()).Id);
        }

        using var reopened = SnapshotStore.Open(Options, metadata);
        Assert.Equal(kept.Id, Assert.Single(reopened.List()).Id);
        AssertContent(reopened, reopened.List()[0], 20_000, 3);
        var next = WriteSnapshot(reopened, 12, 30_000, 5, random);
        // The next snapshot is written where the cancelled one's chunks were: the reopened log ended at the kept one.
        Assert.Equal(kept.EndAddress, next.BeginAddress);
        AssertContent(reopened, next, 30_000, 5);
        Assert.True(StorageVerifier.Verify(Options).IsHealthy, StorageVerifier.Verify(Options).ToString());
    }

    [Fact]
    public void A_corrupt_chunk_is_reported_when_read_and_by_verify()
    {
        SnapshotCatalogueEntry entry;
        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            entry = WriteSnapshot(store, 10, 30_000, 1, new Random(1));
        }

        var geometry = SnapshotStore.GeometryFor(Options);
        var address = entry.BeginAddress + 5000;
        FaultInjectionTests.FlipByte(geometry.SegmentPath(geometry.SegmentOf(address)), geometry.FileOffsetOf(address));
        var report = StorageVerifier.Verify(Options);
        Assert.Contains(report.Problems, p => p.Contains(geometry.SegmentPath(0), StringComparison.Ordinal));

        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        using (var reader = store.OpenRead(store.List()[0]))
        {
            Assert.Throws<StorageCorruptionException>(() => reader.Chunks().Count());
        }
    }

    [Fact]
    public void A_snapshot_newer_ones_replaced_since_it_was_listed_is_refused_as_no_longer_stored()
    {
        var random = new Random(7);
        using var metadata = MetadataStore.Open(_directory.Path);
        using var store = SnapshotStore.Open(Options, metadata);
        var listed = WriteSnapshot(store, 10, 30_000, 1, random);
        WriteSnapshot(store, 20, 30_000, 2, random);
        WriteSnapshot(store, 30, 30_000, 3, random);

        var refused = Assert.Throws<InvalidOperationException>(() => store.OpenRead(listed));
        Assert.Contains("no longer stored", refused.Message, StringComparison.Ordinal);
        AssertSpaceIsReclaimedAfterMoreSnapshots(store, random);
    }

    [Fact]
    public void A_reader_that_fails_to_open_does_not_keep_the_log_from_being_truncated()
    {
        var random = new Random(8);
        SnapshotCatalogueEntry damaged;
        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            damaged = WriteSnapshot(store, 10, 30_000, 1, random);
        }

        // Its Begin record damaged: the reader fails as it opens (the catalogued size and checksum are checked only
        // as it is read, so the store opens).
        var geometry = SnapshotStore.GeometryFor(Options);
        var address = damaged.BeginAddress + LogGeometry.EntryHeaderSize + 2;
        FaultInjectionTests.FlipByte(geometry.SegmentPath(geometry.SegmentOf(address)), geometry.FileOffsetOf(address));
        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            Assert.Throws<StorageCorruptionException>(() => store.OpenRead(store.List()[0]));
            AssertSpaceIsReclaimedAfterMoreSnapshots(store, random);
        }
    }

    [Fact]
    public void A_snapshot_log_whose_commit_record_is_lost_is_refused_with_its_chunks_left_in_place()
    {
        using (var metadata = MetadataStore.Open(_directory.Path))
        using (var store = SnapshotStore.Open(Options, metadata))
        {
            WriteSnapshot(store, 10, 30_000, 1, new Random(9));
        }

        var geometry = SnapshotStore.GeometryFor(Options);
        var before = LogScanner.ExistingSegments(geometry).Order().Select(segment => File.ReadAllBytes(geometry.SegmentPath(segment))).ToList();
        File.Delete(DurableLogCommitManager.MetadataPath(geometry));

        using (var metadata = MetadataStore.Open(_directory.Path))
        {
            Assert.Throws<StorageCorruptionException>(() => SnapshotStore.Open(Options, metadata));
        }

        var after = LogScanner.ExistingSegments(geometry).Order().Select(segment => File.ReadAllBytes(geometry.SegmentPath(segment))).ToList();
        Assert.Equal(before.Count, after.Count);
        Assert.All(before.Zip(after), pair => Assert.True(pair.First.AsSpan().SequenceEqual(pair.Second), "a segment file changed"));
    }

    [Fact]
    public void A_snapshot_being_read_keeps_its_chunks_while_newer_ones_replace_it_and_frees_them_once_closed()
    {
        var random = new Random(12);
        using var metadata = MetadataStore.Open(_directory.Path);
        using var store = SnapshotStore.Open(Options, metadata);
        var first = WriteSnapshot(store, 10, 70_000, 1, random);
        using (var reader = store.OpenRead(first))
        {
            // Three newer snapshots drop the first from the catalogue; the log is not truncated below its reader.
            WriteSnapshot(store, 20, 70_000, 2, random);
            WriteSnapshot(store, 30, 70_000, 3, random);
            WriteSnapshot(store, 40, 70_000, 4, random);
            Assert.DoesNotContain(first.Id, store.List().Select(e => e.Id));

            var expected = new byte[4000];
            long offset = 0;
            foreach (var chunk in reader.Chunks())
            {
                Fill(expected.AsSpan(0, chunk.Length), offset, 1);
                Assert.True(chunk.Span.SequenceEqual(expected.AsSpan(0, chunk.Length)), $"the snapshot being read differs at {offset}");
                offset += chunk.Length;
            }

            Assert.Equal(70_000, offset);
        }

        // Closed, it holds nothing back any more.
        AssertSpaceIsReclaimedAfterMoreSnapshots(store, random);
    }

    [Fact]
    public void A_snapshot_whose_catalogued_checksum_differs_from_what_was_written_is_refused_at_its_end()
    {
        using var metadata = MetadataStore.Open(_directory.Path);
        using var store = SnapshotStore.Open(Options, metadata);
        var entry = WriteSnapshot(store, 10, 30_000, 1, new Random(3));

        // Every record is intact; only the catalogue's checksum (a damaged or mismatched row) disagrees.
        using var reader = store.OpenRead(entry with { Crc32C = entry.Crc32C ^ 1 });
        var error = Assert.Throws<StorageCorruptionException>(() => reader.Chunks().Count());
        Assert.Contains("CRC", error.Message, StringComparison.Ordinal);
    }

    /// <summary>Snapshots written after, beyond the ones kept, let the store delete the first segment file.</summary>
    private void AssertSpaceIsReclaimedAfterMoreSnapshots(SnapshotStore store, Random random)
    {
        var geometry = SnapshotStore.GeometryFor(Options);
        for (var i = 0; i < 8; i++)
        {
            WriteSnapshot(store, 100 + (ulong)i * 10, 30_000, 10 + i, random);
        }

        Assert.False(File.Exists(geometry.SegmentPath(0)), $"the first segment is still there; segments: {string.Join(", ", LogScanner.ExistingSegments(geometry).Order())}");
    }
}

public sealed class MetadataStoreTests : IDisposable
{
    private readonly TempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    [Fact]
    public void A_new_database_is_migrated_to_the_current_schema_and_keeps_what_is_stored()
    {
        using (var metadata = MetadataStore.Open(_directory.Path))
        {
            Assert.Equal(MetadataStore.CurrentSchemaVersion, metadata.SchemaVersion);
            metadata.EnsureIdentity(3, "cluster-a");
            metadata.SaveTermAndVote(7, 2);
            metadata.SaveMembership(40, Membership.Of([1UL, 2UL, 3UL], [4UL], [KeyValuePair.Create(4UL, "http://127.0.0.1:7004")]));
        }

        using var reopened = MetadataStore.Open(_directory.Path);
        Assert.Equal(3UL, reopened.NodeId);
        Assert.Equal("cluster-a", reopened.ClusterId);
        Assert.Equal((7UL, 2UL), reopened.LoadTermAndVote());
        Assert.Equal((40UL, Membership.Of([1UL, 2UL, 3UL], [4UL], [KeyValuePair.Create(4UL, "http://127.0.0.1:7004")])), reopened.LoadMembership());
        Assert.Null(reopened.CheckIntegrity());
        reopened.EnsureIdentity(3, "cluster-a");
        Assert.Throws<DataDirectoryRefusedException>(() => reopened.EnsureIdentity(4, "cluster-a"));
        Assert.Throws<DataDirectoryRefusedException>(() => reopened.EnsureIdentity(3, "cluster-b"));
    }

    [Fact]
    public void The_founding_entry_format_is_absent_until_recorded_then_kept_and_replaced_by_a_later_founding()
    {
        using (var metadata = MetadataStore.Open(_directory.Path))
        {
            metadata.EnsureIdentity(1, "cluster-a");
            Assert.Null(metadata.FoundingEntryFormat);
            metadata.RecordFoundingEntryFormat(7);
            metadata.RecordFoundingEntryFormat(8);
        }

        using var reopened = MetadataStore.Open(_directory.Path);
        Assert.Equal((byte)8, reopened.FoundingEntryFormat);
        Assert.Equal(1UL, reopened.NodeId);
    }

    [Fact]
    public void A_database_written_before_addresses_travelled_is_migrated_and_keeps_its_membership()
    {
        var path = Path.Combine(_directory.Path, MetadataStore.FileName);
        using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False"))
        {
            connection.Open();
            using var command = connection.CreateCommand();
            // Schema version 1, as the first release wrote it.
            command.CommandText = """
                CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, vote INTEGER NOT NULL);
                INSERT INTO hard_state (id, term, vote) VALUES (1, 4, 2);
                CREATE TABLE membership (id INTEGER PRIMARY KEY CHECK (id = 1), raft_index INTEGER NOT NULL, voters TEXT NOT NULL, learners TEXT NOT NULL);
                INSERT INTO membership VALUES (1, 12, '1,2,3', '5');
                CREATE TABLE snapshots (id INTEGER PRIMARY KEY, raft_index INTEGER NOT NULL, raft_term INTEGER NOT NULL, voters TEXT NOT NULL,
                    learners TEXT NOT NULL, begin_address INTEGER NOT NULL, end_address INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
                    crc32c INTEGER NOT NULL, chunk_count INTEGER NOT NULL, created_unix_ms INTEGER NOT NULL);
                INSERT INTO snapshots VALUES (1, 10, 3, '1,2,3', '', 64, 128, 10, 0, 1, 0);
                PRAGMA user_version = 1;
                """;
            command.ExecuteNonQuery();
        }

        using var metadata = MetadataStore.Open(_directory.Path);
        Assert.Equal(MetadataStore.CurrentSchemaVersion, metadata.SchemaVersion);
        Assert.Equal((12UL, Membership.Of([1UL, 2UL, 3UL], [5UL])), metadata.LoadMembership());
        Assert.Equal(Membership.Of([1UL, 2UL, 3UL]), Assert.Single(metadata.ListSnapshots()).Metadata.Membership);
    }

    [Fact]
    public void A_membership_encoded_before_addresses_travelled_reads_back_without_them()
    {
        var withAddresses = Membership.Of([1UL, 2UL], [3UL], [KeyValuePair.Create(2UL, "http://127.0.0.1:7002"), KeyValuePair.Create(3UL, "http://127.0.0.1:7003")]);
        var buffer = new byte[MembershipCodec.EncodedLength(withAddresses)];
        Assert.Equal(buffer.Length, MembershipCodec.Write(withAddresses, buffer));
        Assert.Equal(withAddresses, MembershipCodec.Read(buffer, out var consumed));
        Assert.Equal(buffer.Length, consumed);

        // The old form ends after the learners.
        var legacyLength = 8 + (8 * 3);
        Assert.Equal(Membership.Of([1UL, 2UL], [3UL]), MembershipCodec.Read(buffer.AsSpan(0, legacyLength), out consumed));
        Assert.Equal(legacyLength, consumed);

        // A context cut short is an error, not a silently shorter address.
        Assert.Throws<FormatException>(() => MembershipCodec.Read(buffer.AsSpan(0, buffer.Length - 3), out _));
    }

    [Fact]
    public void A_membership_with_an_updated_address_round_trips_and_one_without_is_written_as_before()
    {
        var founded = Membership.Of([1UL, 2UL], [3UL], [KeyValuePair.Create(2UL, "http://127.0.0.1:7002"), KeyValuePair.Create(3UL, "http://127.0.0.1:7003")]);
        var moved = founded.Apply(new ConfChange(ConfChangeType.UpdateContext, 2, "http://127.0.0.1:7102"));
        var buffer = new byte[MembershipCodec.EncodedLength(moved)];
        Assert.Equal(buffer.Length, MembershipCodec.Write(moved, buffer));
        Assert.Equal(moved, MembershipCodec.Read(buffer, out var consumed));
        Assert.Equal(buffer.Length, consumed);
        Assert.Equal([2UL], MembershipCodec.Read(buffer, out _).UpdatedContexts);

        // Without updates the record ends after the contexts, as older builds wrote it (and they read one with
        // updates as the same addresses, ignoring the section after them).
        var withoutSection = moved with { UpdatedContexts = [] };
        var sectionStart = MembershipCodec.EncodedLength(withoutSection);
        Assert.Equal(sectionStart + 4 + 8, buffer.Length);
        Assert.Equal(withoutSection, MembershipCodec.Read(buffer.AsSpan(0, sectionStart), out consumed));
        Assert.Equal(sectionStart, consumed);
        Assert.Throws<FormatException>(() => MembershipCodec.Read(buffer.AsSpan(0, buffer.Length - 3), out _));
    }

    [Fact]
    public void The_recorded_membership_is_the_newest_one_saved()
    {
        using var metadata = MetadataStore.Open(_directory.Path);
        var moved = Membership.Of([1UL, 2UL], contexts: [KeyValuePair.Create(1UL, "http://127.0.0.1:7001"), KeyValuePair.Create(2UL, "http://127.0.0.1:7102")]);
        metadata.SaveMembership(30, moved);
        // A snapshot taken before the change is compacted behind later: its older membership must not win.
        metadata.SaveMembership(20, Membership.Of([1UL, 2UL], contexts: [KeyValuePair.Create(1UL, "http://127.0.0.1:7001"), KeyValuePair.Create(2UL, "http://127.0.0.1:7002")]));
        Assert.Equal((30UL, moved), metadata.LoadMembership());
        metadata.SaveMembership(30, Membership.Of([1UL]));
        Assert.Equal((30UL, Membership.Of([1UL])), metadata.LoadMembership());
    }

    [Fact]
    public void A_database_from_a_newer_build_is_refused()
    {
        using (var metadata = MetadataStore.Open(_directory.Path))
        {
            using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={metadata.FilePath};Pooling=False");
            connection.Open();
            using var command = connection.CreateCommand();
            command.CommandText = $"PRAGMA user_version = {MetadataStore.CurrentSchemaVersion + 1}";
            command.ExecuteNonQuery();
        }

        // A refusal an operator reads (the node prints it and exits 2), not a fault.
        var error = Assert.Throws<DataDirectoryRefusedException>(() => MetadataStore.Open(_directory.Path));
        Assert.Contains("newer", error.Message, StringComparison.Ordinal);
    }

    private static readonly Membership Founders = Membership.Of([1UL, 2UL, 3UL], contexts: new[] { 1UL, 2UL, 3UL }.Select(id => KeyValuePair.Create(id, $"http://127.0.0.1:700{id}")));

    /// <summary>
    /// The directory's lock is an flock, held per open file, not per process: a second open in the process that holds
    /// it (a test host, an in-process tool) is refused as one from another process is, and the directory opens again
    /// once the first lets go.
    /// </summary>
    [Fact]
    public void Node_storage_refuses_a_second_open_in_the_same_process()
    {
        var options = new StorageOptions { DataDirectory = _directory.Path, RaftLog = new LogFileOptions { PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16 } };
        using (NodeStorage.Open(options, 1, "c1"))
        {
            var refused = Assert.Throws<DataDirectoryRefusedException>(() => NodeStorage.Open(options, 1, "c1"));
            Assert.Contains("is in use by another process", refused.Message, StringComparison.Ordinal);
        }

        using (NodeStorage.Open(options, 1, "c1"))
        {
        }
    }

    /// <summary>
    /// The recovery tools open a stopped node's directory by the identity it records. A node still running holds the
    /// lock: the tools are refused before they open its metadata, which opening would migrate and switch to WAL mode
    /// (here, a metadata file SQLite cannot read shows which came first).
    /// </summary>
    [Fact]
    public void Opening_an_existing_directory_takes_its_lock_before_opening_anything_in_it()
    {
        var options = new StorageOptions { DataDirectory = _directory.Path, RaftLog = new LogFileOptions { PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16 } };
        using (NodeStorage.Open(options, 7, "c1"))
        {
        }

        using (var existing = NodeStorage.OpenExisting(options))
        {
            Assert.Equal(7UL, existing.Metadata.NodeId);
            Assert.Equal("c1", existing.Metadata.ClusterId);
        }

        using var heldByANode = new FileStream(Path.Combine(_directory.Path, NodeStorage.LockFileName), FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        File.WriteAllText(Path.Combine(_directory.Path, MetadataStore.FileName), "not a database");
        var refused = Assert.Throws<DataDirectoryRefusedException>(() => NodeStorage.OpenExisting(options));
        Assert.Contains("is in use by another process", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Node_storage_opens_all_three_parts_and_checks_identity()
    {
        var options = new StorageOptions { DataDirectory = _directory.Path, RaftLog = new LogFileOptions { PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16 } };
        using (var node = NodeStorage.Open(options, 1, "c1"))
        {
            node.RaftLog.Bootstrap(Founders);
            node.RaftLog.Save(new HardState(1, 1, 3), [new Entry(4, 1, EntryType.Normal, ReadOnlyMemory<byte>.Empty)], null);
        }

        using (var node = NodeStorage.Open(options, 1, "c1"))
        {
            // The founding membership is in the log: one committed AddVoter per founding member.
            var entries = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, node.RaftLog.TryGetEntries(1, 4, ulong.MaxValue, entries));
            Assert.Equal([1UL, 2UL, 3UL], entries.Select(e => ConfChange.Decode(e.Data.Span).NodeId));
            Assert.Equal(Founders.Contexts.Values, entries.Select(e => ConfChange.Decode(e.Data.Span).Context));
            Assert.Equal(new HardState(1, 1, 3), node.RaftLog.InitialState().HardState);
            Assert.Equal(4UL, node.RaftLog.LastIndex);
            Assert.Equal(Founders, node.Metadata.LoadMembership()!.Value.Membership);

            // A snapshot's membership keeps the addresses through the log's own records and a reopen.
            node.RaftLog.CreateSnapshot(new SnapshotMetadata(3, 1, Founders), 3);
        }

        using (var node = NodeStorage.Open(options, 1, "c1"))
        {
            Assert.Equal(Founders, node.RaftLog.Snapshot.Membership);
        }

        Assert.Throws<DataDirectoryRefusedException>(() => NodeStorage.Open(options, 2, "c1"));
        Assert.True(StorageVerifier.Verify(options).IsHealthy);
    }
}
