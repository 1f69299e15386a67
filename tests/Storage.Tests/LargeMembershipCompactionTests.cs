using Dcache.Raft;

namespace Dcache.Storage.Tests;

/// <summary>
/// A snapshot's membership is kept in the log's fixed 4 KiB commit record (its replay base). Changes were bounded one
/// by one (a context of at most <see cref="ConfChange.MaxContextBytes"/>), not as a whole: four members at 1 KiB
/// addresses made every compaction fail ("commit metadata of 4248 bytes does not fit a 4096-byte slot"). A
/// configuration is bounded as a whole now, and the largest one allowed compacts and survives a reopen.
/// </summary>
public sealed class LargeMembershipCompactionTests : IDisposable
{
    private readonly TempDirectory _directory = new();

    public void Dispose() => _directory.Dispose();

    [Fact]
    public void A_snapshot_of_the_largest_membership_allowed_compacts_the_log_and_survives_a_reopen()
    {
        // Membership.MaxMembers members, every context set by an update, the contexts filling MaxContextsBytes with the
        // longest one allowed among them: each change passes Validate, one more byte or member does not.
        var longest = "http://" + new string('a', ConfChange.MaxContextBytes - 20) + ".example:7001";
        var rest = (Membership.MaxContextsBytes - ConfChange.MaxContextBytes) / (Membership.MaxMembers - 1);
        var members = Membership.Of([1UL]);
        for (var id = 1UL; id <= Membership.MaxMembers; id++)
        {
            var address = id == 1 ? longest : "http://" + new string('b', rest - 12) + $":{id,4}";
            foreach (var change in new[] { new ConfChange(ConfChangeType.AddLearner, id, "http://x:1"), new ConfChange(ConfChangeType.UpdateContext, id, address) }.Skip(id == 1 ? 1 : 0))
            {
                Assert.Null(members.Validate(change));
                members = members.Apply(change);
            }
        }

        Assert.StartsWith("a cluster has at most", members.Validate(new ConfChange(ConfChangeType.AddLearner, Membership.MaxMembers + 1, "http://x:1")), StringComparison.Ordinal);
        Assert.StartsWith("the members' contexts are limited", members.Validate(new ConfChange(ConfChangeType.UpdateContext, 2, "http://" + new string('c', 990) + ":1")), StringComparison.Ordinal);
        Assert.Equal(Membership.MaxMembers, members.Learners.Count + members.Voters.Count);

        var options = new StorageOptions
        {
            DataDirectory = _directory.Path,
            RaftLog = new LogFileOptions { PageSizeBits = 16, MemorySizeBits = 18, SegmentSizeBits = 20 },
        };
        var entries = Enumerable.Range(1, 6).Select(i => new Entry((ulong)i, 1, EntryType.Normal, new byte[] { (byte)i })).ToList();
        using (var storage = FasterRaftStorage.Open(options))
        {
            storage.Save(new HardState(1, 1, 6), entries, null);
            storage.CreateSnapshot(new SnapshotMetadata(5, 1, members), 5);
            Assert.Equal(6UL, storage.FirstIndex);
        }

        using var reopened = FasterRaftStorage.Open(options);
        Assert.Equal(members, reopened.Snapshot.Membership);
        Assert.Equal(6UL, reopened.FirstIndex);
    }
}
