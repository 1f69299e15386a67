using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Tests.Cache;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A snapshot from the leader is built on the thread pool and swapped in on the loop: meanwhile the loop answers, and
/// nothing committed after the snapshot is applied to the old state; once swapped in, those entries apply on top of it.
/// </summary>
public sealed class SnapshotInstallTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task While_a_snapshots_state_is_built_the_loop_answers_and_applies_nothing_past_it_until_the_swap()
    {
        var leaderState = new CacheHarness();
        for (var i = 1; i <= 100; i++)
        {
            leaderState.Set("snap:" + i, "v" + i);
        }

        using var file = new MemoryStream();
        leaderState.Machine.WriteSnapshot(file);
        var membership = Membership.Of([1UL, 2UL, 3UL]);
        var metadata = new SnapshotMetadata(100, 1, membership);
        var store = new GatedSnapshots(metadata, file.ToArray());

        var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(2, new RaftOptions { Id = 2, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 100_000, 1_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1));
        var driver = new RaftDriver(settings, MemoryStorage.Bootstrap(membership), store, new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance);
        var transport = new PeerTransport(2, "http://127.0.0.1:2", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, driver.Clocks, driver, NullLogger<PeerTransport>.Instance);
        driver.Start(transport);
        try
        {
            var inbox = (IRaftInbox)driver;
            Assert.True(inbox.TryPost(new Message { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 1 }));
            Assert.True(inbox.TryPost(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 1, Snapshot = metadata }));
            await store.Opened.WaitAsync(Patience);

            var envelope = new CommandEnvelope(CommandEnvelope.NoSession, 0, 2_000_000);
            Assert.True(inbox.TryPost(new Message
            {
                Type = MessageType.Append,
                From = 1,
                To = 2,
                Term = 1,
                Index = 100,
                LogTerm = 1,
                Commit = 102,
                Entries = [new Entry(101, 1, EntryType.Normal, Entries.Set(envelope, "after", "x")), new Entry(102, 1, EntryType.Normal, Entries.Set(envelope, "snap:1", "changed"))],
            }));

            // The loop answers while the state is built, and still holds the old state at the old index.
            var during = await driver.RunOnLoopAsync(raft => (Core: raft.AppliedIndex, Cache: driver.Cache.AppliedIndex, Keys: driver.Cache.StoredKeyCount)).WaitAsync(Patience);
            Assert.True(during.Core < 100, $"the core counts applied {during.Core} before the swap");
            Assert.True(during.Cache < 100, $"the cache is at {during.Cache} before the swap");
            Assert.Equal(0, during.Keys);

            store.Release();
            Assert.True(await driver.WaitForStatusAsync(status => status.AppliedIndex >= 102, Patience, CancellationToken.None));
            var after = await driver.RunOnLoopAsync(_ => (
                Index: driver.Cache.AppliedIndex,
                After: Get(driver.Cache, "after"),
                Changed: Get(driver.Cache, "snap:1"),
                Kept: Get(driver.Cache, "snap:2"),
                Keys: driver.Cache.StoredKeyCount)).WaitAsync(Patience);
            Assert.Equal((102UL, "x", "changed", "v2", 101), after);
        }
        finally
        {
            store.Release();
            await driver.DisposeAsync();
            await transport.DisposeAsync();
            metrics.Dispose();
        }
    }

    private static string? Get(CacheStateMachine cache, string key) =>
        cache.TryGet(Entries.B(key), long.MaxValue - 1, out var value) ? System.Text.Encoding.UTF8.GetString(value.Span) : null;

    /// <summary>Holds one snapshot, as if received from the leader; reading it waits until the test releases it.</summary>
    private sealed class GatedSnapshots(SnapshotMetadata metadata, byte[] data) : INodeSnapshotStore
    {
        private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Opened => _opened.Task;

        public void Release() => _released.TrySetResult();

        public void Save(SnapshotMetadata saved, Action<Stream> write) => throw new InvalidOperationException("no local snapshots in this test");

        public StoredSnapshot? Find(ulong index) => index == metadata.Index ? new StoredSnapshot(metadata, 0, data.Length, Open) : null;

        public IReadOnlyList<StoredSnapshot> All() => [];

        public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata received) => throw new InvalidOperationException("the snapshot is stored already");

        private MemoryStream Open()
        {
            _opened.TrySetResult();
            // Runs on the thread pool task that builds the state: it waits for the test, not the loop.
            _released.Task.Wait();
            return new MemoryStream(data, writable: false);
        }
    }
}
