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
        var membership = Membership.Of([1UL, 2UL, 3UL]);
        await using var node = await FollowerInstalling.StartAsync(membership, new SnapshotMetadata(100, 1, membership));
        var (driver, store) = (node.Driver, node.Store);
        {
            var inbox = (IRaftInbox)driver;

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
    }

    [Fact]
    public async Task A_state_captured_while_a_snapshot_is_installed_is_labelled_with_the_membership_at_its_own_index()
    {
        // The core takes the snapshot's membership when it accepts the snapshot; the state stays the old one until the
        // swap. A backup or digest captured in between is of the old state, so it must carry the old membership.
        var before = Membership.Of([1UL, 2UL, 3UL]);
        var installed = Membership.Of([1UL, 2UL, 4UL]);
        await using var node = await FollowerInstalling.StartAsync(before, new SnapshotMetadata(100, 1, installed));
        var driver = node.Driver;

        var core = await driver.RunOnLoopAsync(raft => raft.Membership).WaitAsync(Patience);
        Assert.Equal(installed, core);
        var (label, _) = await driver.CaptureStateAsync().WaitAsync(Patience);

        Assert.True(label.Index < 100, $"captured at {label.Index}, the snapshot's index or past it, before the swap");
        Assert.Equal(before, label.Membership);
    }

    [Fact]
    public async Task A_state_captured_right_after_the_swap_is_labelled_with_the_membership_at_its_own_index()
    {
        // The swap and the rest of the Ready that brought the snapshot (which moves the followed membership to the
        // snapshot's) must not be split by other work: a capture taken between them is of the snapshot's state.
        var before = Membership.Of([1UL, 2UL, 3UL]);
        var installed = Membership.Of([1UL, 2UL, 4UL]);
        await using var node = await FollowerInstalling.StartAsync(before, new SnapshotMetadata(100, 1, installed));
        var (driver, store) = (node.Driver, node.Store);

        // Hold the loop while the state is built and handed to it, so that the capture below is taken in the same round.
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var held = driver.RunOnLoopAsync(_ =>
        {
            holding.SetResult();
            return release.Task.Wait(Patience);
        });
        await holding.Task.WaitAsync(Patience);
        store.Release();
        // The stream is closed once the built state is handed to the loop.
        await store.Closed.WaitAsync(Patience);
        var capture = driver.CaptureStateAsync();
        release.SetResult();
        Assert.True(await held.WaitAsync(Patience));

        var (label, _) = await capture.WaitAsync(Patience);
        Assert.Equal(label.Index >= 100 ? installed : before, label.Membership);
    }

    [Fact]
    public async Task A_write_and_a_membership_change_a_snapshot_from_the_leader_covers_are_answered_when_it_is_installed()
    {
        // Node 2 leads term 2 and proposes a write and a membership change that reach no one; node 1, elected in term 3,
        // sends a snapshot at index 100, past both. Their entries are never applied here one by one, and node 2 cannot
        // tell whether they are in the snapshot: both are answered as of unknown outcome then, not left waiting (the
        // write for its deadline, a minute here; the change, which has none on the loop, for good).
        var membership = Membership.Of([1UL, 2UL, 3UL]);
        await using var node = FollowerInstalling.Create(membership, new SnapshotMetadata(100, 3, membership));
        var driver = node.Driver;
        var inbox = (IRaftInbox)driver;
        node.Store.Release();
        var noOp = await driver.RunOnLoopAsync(raft =>
        {
            raft.Campaign();
            raft.Step(new Message { Type = MessageType.PreVoteResponse, From = 3, To = 2, Term = 2 });
            raft.Step(new Message { Type = MessageType.VoteResponse, From = 3, To = 2, Term = 2 });
            Assert.Equal(Role.Leader, raft.Role);
            return raft.LastIndex;
        }).WaitAsync(Patience);
        Assert.True(inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 3, To = 2, Term = 2, Index = noOp }));
        await DriverWaits.UntilAsync(driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");

        var write = driver.ExecuteAsync(new Dcache.Protocol.Cache.Command
        {
            Id = 1,
            Set = new Dcache.Protocol.Cache.SetRequest { Key = Google.Protobuf.ByteString.CopyFromUtf8("k"), Value = Google.Protobuf.ByteString.CopyFromUtf8("v") },
        });
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex == noOp + 1, "the write was not appended");
        var (proposal, refusal, applied) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 4, "http://127.0.0.1:4"), _ => null).WaitAsync(Patience);
        Assert.Null(refusal);
        Assert.Equal(noOp + 2, proposal.Index);

        Assert.True(inbox.TryPost(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 3, Snapshot = new SnapshotMetadata(100, 3, membership) }));
        Assert.True(await driver.WaitForStatusAsync(status => status.AppliedIndex >= 100, Patience, CancellationToken.None), "the snapshot was not installed");

        Assert.True(await Task.WhenAny(write, Task.Delay(Patience)) == write, "the write was not answered");
        Assert.Equal(Dcache.Protocol.Cache.FailureKind.OutcomeUnknown, (await write).Failure?.Kind);
        Assert.True(await Task.WhenAny(applied!, Task.Delay(Patience)) == applied, "the membership change was not answered");
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => applied!);
        Assert.Contains("may have applied", failure.Message, StringComparison.Ordinal);
    }

    /// <summary>
    /// Node 2 of a cluster of <c>membership</c>, following node 1, which sends it a snapshot of 100 keys; building the
    /// snapshot's state waits until the test releases it (StartAsync returns once the build has begun).
    /// </summary>
    private sealed class FollowerInstalling : IAsyncDisposable
    {
        private readonly NodeMetrics _metrics = new();
        private readonly PeerTransport _transport;

        private FollowerInstalling(Membership membership, SnapshotMetadata snapshot)
        {
            var leaderState = new CacheHarness();
            for (var i = 1; i <= 100; i++)
            {
                leaderState.Set("snap:" + i, "v" + i);
            }

            using var file = new MemoryStream();
            leaderState.Machine.WriteSnapshot(file);
            Store = new GatedSnapshots(snapshot, file.ToArray());
            var settings = new RaftDriverSettings(2, new RaftOptions { Id = 2, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 100_000, 1_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1));
            Driver = new RaftDriver(settings, MemoryStorage.Bootstrap(membership), Store, new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, _metrics, NullLogger<RaftDriver>.Instance);
            _transport = new PeerTransport(2, "http://127.0.0.1:2", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
            Driver.Start(_transport);
        }

        public RaftDriver Driver { get; }

        public GatedSnapshots Store { get; }

        /// <summary>The node, before any message reaches it: the snapshot is sent only if the test sends it.</summary>
        public static FollowerInstalling Create(Membership membership, SnapshotMetadata snapshot) => new(membership, snapshot);

        public static async Task<FollowerInstalling> StartAsync(Membership membership, SnapshotMetadata snapshot)
        {
            var node = new FollowerInstalling(membership, snapshot);
            var inbox = (IRaftInbox)node.Driver;
            Assert.True(inbox.TryPost(new Message { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 1 }));
            Assert.True(inbox.TryPost(new Message { Type = MessageType.Snapshot, From = 1, To = 2, Term = 1, Snapshot = snapshot }));
            await node.Store.Opened.WaitAsync(Patience);
            return node;
        }

        public async ValueTask DisposeAsync()
        {
            Store.Release();
            await Driver.DisposeAsync();
            await _transport.DisposeAsync();
            _metrics.Dispose();
        }
    }

    private static string? Get(CacheStateMachine cache, string key) =>
        cache.TryGet(Entries.B(key), long.MaxValue - 1, out var value) ? System.Text.Encoding.UTF8.GetString(value.Span) : null;

    /// <summary>Holds one snapshot, as if received from the leader; reading it waits until the test releases it.</summary>
    private sealed class GatedSnapshots(SnapshotMetadata metadata, byte[] data) : INodeSnapshotStore
    {
        private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Opened => _opened.Task;

        /// <summary>Completes when the stream read is closed: after the state built from it was handed to the loop.</summary>
        public Task Closed => _closed.Task;

        public void Release() => _released.TrySetResult();

        public void Save(SnapshotMetadata saved, Action<Stream> write, CancellationToken cancellationToken) => throw new InvalidOperationException("no local snapshots in this test");

        public StoredSnapshot? Find(ulong index) => index == metadata.Index ? new StoredSnapshot(metadata, 0, data.Length, Open) : null;

        public IReadOnlyList<StoredSnapshot> All() => [];

        public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata received) => throw new InvalidOperationException("the snapshot is stored already");

        private ClosingStream Open()
        {
            _opened.TrySetResult();
            // Runs on the thread pool task that builds the state: it waits for the test, not the loop.
            _released.Task.Wait();
            return new ClosingStream(data, _closed);
        }

        private sealed class ClosingStream(byte[] data, TaskCompletionSource closed) : MemoryStream(data, writable: false)
        {
            protected override void Dispose(bool disposing)
            {
                base.Dispose(disposing);
                closed.TrySetResult();
            }
        }
    }
}
