using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Tests.Transport;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// What a node tells its peers must already be on its disk: a follower that acknowledges entries (or a vote, or a
/// term) before they are durable, then crashes, forgets what the leader counted on, and a write acknowledged to a client
/// can be lost. The driver persists a Ready with one durable commit, and only then sends its messages.
/// </summary>
public sealed class DurableBeforeSendTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>How long each save waits for a message to reach the peer, which must not happen before the save returns.</summary>
    private static readonly TimeSpan Watch = TimeSpan.FromSeconds(1);

    [Fact]
    public async Task A_follower_acknowledges_entries_and_a_new_term_only_once_they_are_saved()
    {
        var peer = new AcceptingInbox(2);
        await using var leader = await GrpcTestServer.StartRaftTransportAsync(peer, new ClusterCredentials("test", "secret"));
        try
        {
            var disk = new WatchedStorage(MemoryStorage.Bootstrap(Membership.Of([1UL, 2UL, 3UL])), peer);
            await using var node = Follower.Start(disk, $"http://127.0.0.1:{GrpcTestServer.PortOf(leader)}");
            var last = disk.LastIndex;
            Assert.Equal(LogReadStatus.Ok, disk.TryGetTerm(last, out var lastTerm));
            var term = disk.HardState.Term + 1;

            // A heartbeat of a new term: the term is saved, then the answer goes (and the stream to the leader is open).
            node.Post(new Message { Type = MessageType.Heartbeat, From = 2, To = 1, Term = term });
            await Eventually.WaitAsync(() => peer.Posted >= 1, Patience, "the heartbeat was never answered");

            // An entry: saved, then acknowledged.
            node.Post(new Message
            {
                Type = MessageType.Append, From = 2, To = 1, Term = term, Index = last, LogTerm = lastTerm,
                Entries = [new Entry(last + 1, term, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
            });
            await Eventually.WaitAsync(() => peer.Posted >= 2, Patience, "the entry was never acknowledged");

            Assert.True(disk.Saves >= 2, $"{disk.Saves} saves");
            Assert.Empty(disk.Violations);
        }
        finally
        {
            await leader.StopAsync();
        }
    }

    [Fact]
    public async Task The_commit_index_a_heartbeat_moves_is_written_to_the_log_storage()
    {
        // Written without waiting for the disk (only the commit moved), but written: a restart replays up to it.
        var disk = MemoryStorage.Bootstrap(Membership.Of([1UL, 2UL, 3UL]));
        await using var node = Follower.Start(disk, "http://127.0.0.1:1");
        var last = disk.LastIndex;
        Assert.Equal(LogReadStatus.Ok, disk.TryGetTerm(last, out var lastTerm));
        var term = disk.HardState.Term + 1;
        node.Post(new Message
        {
            Type = MessageType.Append, From = 2, To = 1, Term = term, Index = last, LogTerm = lastTerm, Commit = last,
            Entries = [new Entry(last + 1, term, EntryType.Normal, ReadOnlyMemory<byte>.Empty)],
        });
        await DriverWaits.UntilAsync(node.Driver, raft => raft.LastIndex == last + 1, "the entry was not taken");

        node.Post(new Message { Type = MessageType.Heartbeat, From = 2, To = 1, Term = term, Commit = last + 1 });
        await DriverWaits.UntilAsync(node.Driver, raft => raft.AppliedIndex == last + 1, "the entry was not applied");

        Assert.Equal(last + 1, await node.Driver.RunOnLoopAsync(_ => disk.HardState.Commit).WaitAsync(Patience));
    }

    /// <summary>Node 1 of 1, 2 and 3, following node 2 at <paramref name="leaderAddress"/>; elections far off.</summary>
    private sealed class Follower : IAsyncDisposable
    {
        private readonly NodeMetrics _metrics = new();
        private readonly PeerTransport _transport;

        private Follower(IRaftStorage disk, string leaderAddress)
        {
            var addresses = new AddressBook(new Dictionary<ulong, string> { [2] = leaderAddress });
            var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1));
            Driver = new RaftDriver(settings, disk, new NoSnapshots(), new CacheStateMachine(), addresses, (_, _) => { }, TimeProvider.System, _metrics, NullLogger<RaftDriver>.Instance);
            _transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
            _transport.SetPeers(addresses.All);
            Driver.Start(_transport);
        }

        public RaftDriver Driver { get; }

        public static Follower Start(IRaftStorage disk, string leaderAddress) => new(disk, leaderAddress);

        public void Post(Message message) => Assert.True(((IRaftInbox)Driver).TryPost(message));

        public async ValueTask DisposeAsync()
        {
            await Driver.DisposeAsync();
            await _transport.DisposeAsync();
            _metrics.Dispose();
        }
    }

    /// <summary>
    /// Storage in memory whose every save waits (up to <see cref="Watch"/>) for a message to reach <paramref name="peer"/>,
    /// and records one that does: the driver sent it before what it says was saved.
    /// </summary>
    private sealed class WatchedStorage(MemoryStorage inner, AcceptingInbox peer) : IRaftStorage
    {
        private int _saves;

        public int Saves => Volatile.Read(ref _saves);

        public System.Collections.Concurrent.ConcurrentQueue<string> Violations { get; } = new();

        public HardState HardState => inner.HardState;

        public ulong FirstIndex => inner.FirstIndex;

        public ulong LastIndex => inner.LastIndex;

        public SnapshotMetadata Snapshot => inner.Snapshot;

        public RaftInitialState InitialState() => inner.InitialState();

        public LogReadStatus TryGetTerm(ulong index, out ulong term) => inner.TryGetTerm(index, out term);

        public LogReadStatus TryGetEntries(ulong lo, ulong hi, ulong maxBytes, List<Entry> into) => inner.TryGetEntries(lo, hi, maxBytes, into);

        public void Save(HardState? hardState, IReadOnlyList<Entry> entries, SnapshotMetadata? snapshot)
        {
            Interlocked.Increment(ref _saves);
            var before = peer.Posted;
            var deadline = DateTime.UtcNow + Watch;
            while (peer.Posted == before && DateTime.UtcNow < deadline)
            {
                Thread.Sleep(1); // polled: the loop is held here, as by a slow disk
            }

            if (peer.Posted != before)
            {
                Violations.Enqueue($"a message reached the peer while saving {entries.Count} entries and hard state {hardState}");
            }

            inner.Save(hardState, entries, snapshot);
        }

        public void CreateSnapshot(SnapshotMetadata snapshot, ulong compactTo) => inner.CreateSnapshot(snapshot, compactTo);

        public void Dispose() => inner.Dispose();
    }
}
