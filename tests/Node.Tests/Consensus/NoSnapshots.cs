using Dcache.Node.Consensus;
using Dcache.Raft;

namespace Dcache.Node.Tests.Consensus;

/// <summary>A snapshot store for drivers whose tests never snapshot: any attempt to is a failure of the test.</summary>
internal sealed class NoSnapshots : INodeSnapshotStore
{
    public void Save(SnapshotMetadata metadata, Action<Stream> write, CancellationToken cancellationToken) => throw new InvalidOperationException("no snapshots in this test");

    public StoredSnapshot? Find(ulong index) => null;

    public IReadOnlyList<StoredSnapshot> All() => [];

    public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata) => throw new InvalidOperationException("no snapshots in this test");
}

/// <summary>Waits on a driver's loop for what a test expects of its Raft state.</summary>
internal static class DriverWaits
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>Asks <paramref name="condition"/> on the loop until it holds, failing with <paramref name="what"/> after 20 s.</summary>
    public static Task UntilAsync(RaftDriver driver, Func<RaftNode, bool> condition, string what) =>
        Eventually.WaitAsync(() => driver.RunOnLoopAsync(condition).WaitAsync(Patience), TimeSpan.FromSeconds(20), what);
}
