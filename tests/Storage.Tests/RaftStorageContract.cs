using System.Text;
using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// The behaviour every <see cref="IRaftStorage"/> must have, as <see cref="MemoryStorage"/> defines it. Each test
/// checks its expectations, reopens the storage (a no-op for the in-memory one) and checks them again, so a
/// durable implementation is also held to "what was saved is what is read back".
/// </summary>
public abstract class RaftStorageContract : IDisposable
{
    private IRaftStorage? _storage;

    protected abstract IRaftStorage Create();

    /// <summary>Closes and reopens a durable storage; returns the same object for an in-memory one.</summary>
    protected abstract IRaftStorage Reopen(IRaftStorage storage);

    protected IRaftStorage Storage => _storage ??= Create();

    public virtual void Dispose()
    {
        _storage?.Dispose();
        GC.SuppressFinalize(this);
    }

    protected static Entry E(ulong index, ulong term, string data = "", EntryType type = EntryType.Normal) =>
        new(index, term, type, Encoding.UTF8.GetBytes(data.Length == 0 ? $"e{index}t{term}" : data));

    protected static List<Entry> Range(ulong from, ulong to, ulong term) =>
        [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => E((ulong)i, term))];

    /// <summary>Runs <paramref name="check"/> now and again after a reopen.</summary>
    protected void CheckAndReopen(Action<IRaftStorage> check)
    {
        check(Storage);
        _storage = Reopen(Storage);
        check(Storage);
    }

    protected static List<Entry> ReadAll(IRaftStorage storage)
    {
        var list = new List<Entry>();
        if (storage.LastIndex >= storage.FirstIndex)
        {
            Assert.Equal(LogReadStatus.Ok, storage.TryGetEntries(storage.FirstIndex, storage.LastIndex + 1, ulong.MaxValue, list));
        }

        return list;
    }

    protected static void AssertEntries(IEnumerable<Entry> expected, IEnumerable<Entry> actual)
    {
        var e = expected.ToList();
        var a = actual.ToList();
        Assert.Equal(e.Count, a.Count);
        for (var i = 0; i < e.Count; i++)
        {
            Assert.Equal(e[i].Index, a[i].Index);
            Assert.Equal(e[i].Term, a[i].Term);
            Assert.Equal(e[i].Type, a[i].Type);
            Assert.True(e[i].Data.Span.SequenceEqual(a[i].Data.Span), $"payload of entry {e[i].Index} differs");
        }
    }

    [Fact]
    public void A_new_storage_is_empty()
    {
        CheckAndReopen(s =>
        {
            Assert.Equal(1UL, s.FirstIndex);
            Assert.Equal(0UL, s.LastIndex);
            Assert.Equal(LogReadStatus.Ok, s.TryGetTerm(0, out var term));
            Assert.Equal(0UL, term);
            Assert.Equal(LogReadStatus.Unavailable, s.TryGetTerm(1, out _));
            Assert.True(s.InitialState().HardState.IsEmpty);
            Assert.True(s.Snapshot.IsEmpty);
        });
    }

    [Fact]
    public void Saved_entries_and_hard_state_are_read_back()
    {
        var entries = new List<Entry> { E(1, 1, "a"), E(2, 1, "", EntryType.ConfChange), E(3, 2, "ccc") };
        entries[1] = new Entry(2, 1, EntryType.ConfChange, new ConfChange(ConfChangeType.AddVoter, 7).Encode());
        Storage.Save(new HardState(2, 3, 1), entries, null);
        CheckAndReopen(s =>
        {
            Assert.Equal(1UL, s.FirstIndex);
            Assert.Equal(3UL, s.LastIndex);
            Assert.Equal(new HardState(2, 3, 1), s.InitialState().HardState);
            AssertEntries(entries, ReadAll(s));
            Assert.Equal(LogReadStatus.Ok, s.TryGetTerm(3, out var term));
            Assert.Equal(2UL, term);
        });
    }

    [Fact]
    public void An_empty_entry_is_kept_as_the_leaders_noop()
    {
        var noop = new Entry(1, 4, EntryType.Normal, ReadOnlyMemory<byte>.Empty);
        Storage.Save(null, [noop], null);
        CheckAndReopen(s => AssertEntries([noop], ReadAll(s)));
    }

    [Fact]
    public void Hard_state_alone_is_saved()
    {
        Storage.Save(new HardState(5, 2, 0), [], null);
        Storage.Save(null, Range(1, 3, 5), null);
        Storage.Save(new HardState(5, 2, 3), [], null);
        CheckAndReopen(s => Assert.Equal(new HardState(5, 2, 3), s.InitialState().HardState));
    }

    [Fact]
    public void A_vote_cast_later_in_the_same_term_is_saved()
    {
        // A node that learned the term without voting, then voted in it: forgetting the vote would let it vote twice
        // in one term after a restart.
        Storage.Save(new HardState(5, 0, 0), [], null);
        Storage.Save(new HardState(5, 3, 0), [], null);
        CheckAndReopen(s => Assert.Equal(new HardState(5, 3, 0), s.InitialState().HardState));
    }

    [Fact]
    public void Appending_at_index_i_supersedes_everything_from_i_on()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        Storage.Save(null, Range(6, 7, 2), null);
        CheckAndReopen(s =>
        {
            Assert.Equal(7UL, s.LastIndex);
            AssertEntries([.. Range(1, 5, 1), .. Range(6, 7, 2)], ReadAll(s));
        });
    }

    [Fact]
    public void Overwriting_the_whole_log_and_appending_again_works()
    {
        Storage.Save(null, Range(1, 5, 1), null);
        Storage.Save(null, Range(1, 2, 3), null);
        Storage.Save(null, Range(3, 4, 3), null);
        CheckAndReopen(s => AssertEntries(Range(1, 4, 3), ReadAll(s)));
    }

    [Fact]
    public void An_append_leaving_a_gap_is_refused()
    {
        Storage.Save(null, Range(1, 3, 1), null);
        Assert.Throws<InvalidOperationException>(() => Storage.Save(null, Range(5, 6, 1), null));
        CheckAndReopen(s => Assert.Equal(3UL, s.LastIndex));
    }

    [Fact]
    public void Reads_outside_the_log_say_why()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        Storage.CreateSnapshot(new SnapshotMetadata(5, 1, Membership.Of([1UL])), 4);
        CheckAndReopen(s =>
        {
            var into = new List<Entry>();
            Assert.Equal(LogReadStatus.Compacted, s.TryGetEntries(4, 6, ulong.MaxValue, into));
            Assert.Equal(LogReadStatus.Unavailable, s.TryGetEntries(5, 12, ulong.MaxValue, into));
            Assert.Empty(into);
            Assert.Equal(LogReadStatus.Compacted, s.TryGetTerm(3, out _));
            Assert.Equal(LogReadStatus.Ok, s.TryGetTerm(4, out var term));
            Assert.Equal(1UL, term);
            Assert.Equal(LogReadStatus.Unavailable, s.TryGetTerm(11, out _));
        });
    }

    [Fact]
    public void Reads_stop_at_the_byte_limit_but_return_at_least_one_entry()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        CheckAndReopen(s =>
        {
            var one = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, s.TryGetEntries(1, 11, 1, one));
            Assert.Single(one);
            var some = new List<Entry>();
            var perEntry = E(1, 1).Size;
            Assert.Equal(LogReadStatus.Ok, s.TryGetEntries(1, 11, perEntry * 3, some));
            Assert.Equal(3, some.Count);
        });
    }

    [Fact]
    public void Creating_a_snapshot_compacts_the_log()
    {
        var membership = Membership.Of([1UL, 2UL, 3UL], [4UL]);
        Storage.Save(new HardState(2, 1, 8), [.. Range(1, 5, 1), .. Range(6, 10, 2)], null);
        Storage.CreateSnapshot(new SnapshotMetadata(8, 2, membership), 7);
        CheckAndReopen(s =>
        {
            Assert.Equal(8UL, s.FirstIndex);
            Assert.Equal(10UL, s.LastIndex);
            Assert.Equal(new SnapshotMetadata(8, 2, membership), s.Snapshot);
            Assert.Equal(new SnapshotMetadata(8, 2, membership), s.InitialState().Snapshot);
            Assert.Equal(LogReadStatus.Ok, s.TryGetTerm(7, out var term));
            Assert.Equal(2UL, term);
            AssertEntries(Range(8, 10, 2), ReadAll(s));
            Assert.Equal(8UL, s.InitialState().HardState.Commit);
        });
    }

    [Fact]
    public void An_older_snapshot_is_ignored_and_one_beyond_the_log_is_refused()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        Storage.CreateSnapshot(new SnapshotMetadata(6, 1, Membership.Of([1UL])), 6);
        Storage.CreateSnapshot(new SnapshotMetadata(4, 1, Membership.Of([1UL])), 4);
        Assert.Throws<InvalidOperationException>(() => Storage.CreateSnapshot(new SnapshotMetadata(11, 1, Membership.Of([1UL])), 11));
        CheckAndReopen(s =>
        {
            Assert.Equal(6UL, s.Snapshot.Index);
            Assert.Equal(7UL, s.FirstIndex);
        });
    }

    [Fact]
    public void Compacting_everything_leaves_an_empty_log_that_continues()
    {
        Storage.Save(null, Range(1, 4, 1), null);
        Storage.CreateSnapshot(new SnapshotMetadata(4, 1, Membership.Of([1UL])), 4);
        CheckAndReopen(s =>
        {
            Assert.Equal(5UL, s.FirstIndex);
            Assert.Equal(4UL, s.LastIndex);
        });
        Storage.Save(null, Range(5, 6, 2), null);
        CheckAndReopen(s => AssertEntries(Range(5, 6, 2), ReadAll(s)));
    }

    [Fact]
    public void An_installed_snapshot_matching_the_log_keeps_the_suffix()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        var snapshot = new SnapshotMetadata(5, 1, Membership.Of([1UL, 2UL]));
        Storage.Save(null, [], snapshot);
        CheckAndReopen(s =>
        {
            Assert.Equal(6UL, s.FirstIndex);
            Assert.Equal(10UL, s.LastIndex);
            Assert.Equal(snapshot, s.Snapshot);
            AssertEntries(Range(6, 10, 1), ReadAll(s));
        });
    }

    [Fact]
    public void An_installed_snapshot_conflicting_with_the_log_replaces_it()
    {
        Storage.Save(null, Range(1, 10, 1), null);
        var snapshot = new SnapshotMetadata(7, 3, Membership.Of([1UL, 2UL]));
        Storage.Save(new HardState(3, 0, 7), Range(8, 9, 3), snapshot);
        CheckAndReopen(s =>
        {
            Assert.Equal(8UL, s.FirstIndex);
            Assert.Equal(9UL, s.LastIndex);
            Assert.Equal(LogReadStatus.Ok, s.TryGetTerm(7, out var term));
            Assert.Equal(3UL, term);
            AssertEntries(Range(8, 9, 3), ReadAll(s));
            Assert.Equal(new HardState(3, 0, 7), s.InitialState().HardState);
        });
    }

    [Fact]
    public void An_installed_snapshot_beyond_the_log_replaces_it()
    {
        Storage.Save(null, Range(1, 3, 1), null);
        Storage.Save(null, [], new SnapshotMetadata(50, 4, Membership.Of([1UL])));
        CheckAndReopen(s =>
        {
            Assert.Equal(51UL, s.FirstIndex);
            Assert.Equal(50UL, s.LastIndex);
        });
        Storage.Save(null, Range(51, 52, 4), null);
        CheckAndReopen(s => AssertEntries(Range(51, 52, 4), ReadAll(s)));
    }

    [Fact]
    public void A_snapshot_beyond_the_log_installed_with_the_entries_after_it_in_one_save_keeps_them()
    {
        Storage.Save(null, Range(1, 5, 1), null);
        Storage.Save(new HardState(2, 0, 8), Range(9, 10, 2), new SnapshotMetadata(8, 2, Membership.Of([1UL])));
        CheckAndReopen(s =>
        {
            Assert.Equal(9UL, s.FirstIndex);
            Assert.Equal(10UL, s.LastIndex);
            AssertEntries(Range(9, 10, 2), ReadAll(s));
        });
    }

    [Fact]
    public void Appending_at_or_before_the_compaction_point_is_refused()
    {
        Storage.Save(null, Range(1, 5, 1), null);
        Storage.CreateSnapshot(new SnapshotMetadata(3, 1, Membership.Of([1UL])), 3);
        Assert.Throws<InvalidOperationException>(() => Storage.Save(null, Range(3, 4, 2), null));
        CheckAndReopen(s => AssertEntries(Range(4, 5, 1), ReadAll(s)));
    }
}

public sealed class MemoryStorageContractTests : RaftStorageContract
{
    protected override IRaftStorage Create() => new MemoryStorage();

    protected override IRaftStorage Reopen(IRaftStorage storage) => storage;
}

public sealed class FasterStorageContractTests : RaftStorageContract
{
    private readonly TempDirectory _directory = new();

    /// <summary>Small pages and segments, so that the few entries of a test already cross page and file boundaries.</summary>
    internal static StorageOptions SmallOptions(string directory) => new()
    {
        DataDirectory = directory,
        RaftLog = new LogFileOptions { PageSizeBits = 10, MemorySizeBits = 12, SegmentSizeBits = 12 },
    };

    protected override IRaftStorage Create() => FasterRaftStorage.Open(SmallOptions(_directory.Path));

    protected override IRaftStorage Reopen(IRaftStorage storage)
    {
        storage.Dispose();
        return Create();
    }

    public override void Dispose()
    {
        base.Dispose();
        _directory.Dispose();
    }
}
