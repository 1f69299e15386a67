using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// The membership recorded in the metadata database follows the snapshots the Raft log compacts to: once the entries
/// that changed the membership are compacted away, the record is all that names the members.
/// </summary>
public sealed class SnapshotMembershipTests : IDisposable
{
    private readonly TempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    private static List<Entry> Range(ulong from, ulong to, ulong term) =>
        [.. Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => new Entry((ulong)i, term, EntryType.Normal, new byte[] { (byte)i }))];

    [Fact]
    public void A_snapshot_taken_locally_records_its_membership()
    {
        var members = Membership.Of([1UL, 2UL], [3UL]);
        using var metadata = MetadataStore.Open(_directory.Path);
        using (var storage = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(_directory.Path), metadata))
        {
            storage.Save(null, Range(1, 6, 1), null);
            storage.CreateSnapshot(new SnapshotMetadata(4, 1, members), 4);
        }

        Assert.Equal((4UL, members), metadata.LoadMembership());
    }

    [Fact]
    public void An_installed_snapshot_records_its_membership()
    {
        var members = Membership.Of([1UL, 5UL, 6UL]);
        using var metadata = MetadataStore.Open(_directory.Path);
        using (var storage = FasterRaftStorage.Open(FasterStorageContractTests.SmallOptions(_directory.Path), metadata))
        {
            storage.Save(null, Range(1, 3, 1), null);
            storage.Save(new HardState(2, 0, 8), [], new SnapshotMetadata(8, 2, members));
            Assert.Equal(9UL, storage.FirstIndex);
        }

        Assert.Equal((8UL, members), metadata.LoadMembership());
    }
}
