using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A node whose Raft log was compacted behind a snapshot needs that snapshot (or a later one it can continue from) to
/// rebuild its cache: without it, it must refuse to start rather than serve, and vote, on an empty cache.
/// </summary>
public sealed class StartupCheckTests
{
    [Fact]
    public void A_log_compacted_behind_a_snapshot_the_store_does_not_hold_is_refused_at_start()
    {
        var membership = Membership.Of([1UL, 2UL, 3UL]);
        var disk = MemoryStorage.Bootstrap(membership);
        var last = disk.LastIndex;
        Assert.Equal(LogReadStatus.Ok, disk.TryGetTerm(last, out var term));
        disk.CreateSnapshot(new SnapshotMetadata(last, term, membership), last);
        using var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1));

        var refusal = Assert.Throws<InvalidOperationException>(() => new RaftDriver(settings, disk, new NoSnapshots(), new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()),
            (_, _) => { }, TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance));

        Assert.Equal($"the Raft log starts at snapshot {last}, but the snapshot store holds no snapshot it can continue from", refusal.Message);
    }
}
