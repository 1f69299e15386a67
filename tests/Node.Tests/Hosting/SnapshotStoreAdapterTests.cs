using Dcache.Node.Hosting;
using Dcache.Raft;
using Dcache.Storage;
using Dcache.Storage.Tests;

namespace Dcache.Node.Tests.Hosting;

/// <summary>
/// A snapshot received from the leader is checked against the CRC-32C its sender computed before it is kept: a damaged
/// one installed would leave this replica's state apart from the others' for good.
/// </summary>
public sealed class SnapshotStoreAdapterTests
{
    private static readonly SnapshotMetadata Metadata = new(10, 2, Membership.Of([1UL, 2UL, 3UL]));

    [Fact]
    public void A_received_snapshot_whose_bytes_do_not_match_the_senders_checksum_is_refused_and_not_kept()
    {
        using var data = new TempDirectory("snapshot-adapter");
        using var storage = NodeStorage.Open(new StorageOptions { DataDirectory = data.Path }, 1, "test");
        var adapter = new SnapshotStoreAdapter(storage.Snapshots);
        byte[] bytes = [1, 2, 3, 4, 5, 6, 7, 8];

        using (var writer = adapter.BeginReceive(Metadata))
        {
            writer.Write(bytes.AsSpan(0, 3));
            writer.Write(bytes.AsSpan(3));
            var refusal = Assert.Throws<InvalidDataException>(() => writer.Commit(Crc32C.Append(0, bytes) ^ 1));
            Assert.Contains("snapshot 10", refusal.Message, StringComparison.Ordinal);
        }

        Assert.Empty(adapter.All());
    }

    [Fact]
    public void A_received_snapshot_whose_bytes_match_is_kept_and_reads_back_as_sent()
    {
        using var data = new TempDirectory("snapshot-adapter");
        using var storage = NodeStorage.Open(new StorageOptions { DataDirectory = data.Path }, 1, "test");
        var adapter = new SnapshotStoreAdapter(storage.Snapshots);
        byte[] bytes = [1, 2, 3, 4, 5, 6, 7, 8];

        using (var writer = adapter.BeginReceive(Metadata))
        {
            writer.Write(bytes);
            writer.Commit(Crc32C.Append(0, bytes));
        }

        var stored = Assert.Single(adapter.All());
        Assert.Equal((10UL, 2UL), (stored.Metadata.Index, stored.Metadata.Term));
        using var stream = stored.OpenRead();
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        Assert.Equal(bytes, copy.ToArray());
    }
}
