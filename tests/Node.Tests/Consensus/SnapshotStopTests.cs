using System.Collections.Concurrent;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Dcache.Storage;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A node stopping while its automatic snapshot is written: writing a few million keys takes seconds, and the stop
/// waited for it (bounded at 5 s, then storage closed under the writer). The stop now abandons the snapshot at its
/// next chunk, and disposal returns once the writer has let go, so storage never closes under it.
/// </summary>
public sealed class SnapshotStopTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_stop_cancels_the_snapshot_being_written_and_disposal_returns_once_the_writer_let_go()
    {
        var events = new ConcurrentQueue<string>();
        var snapshots = new HeldSnapshots(events);
        await using (var node = SingleNode.Start(MemoryStorage.Bootstrap(Membership.Of([1UL])), snapshots, snapshotEntries: 5_000))
        {
            await node.WriteAsync(0, 5_000);
            await snapshots.Entered.WaitAsync(Patience);
            events.Enqueue("disposal began");
            await node.DisposeAsync();
            events.Enqueue("disposal returned");
        }

        // Without the cancellation the held write never ends and disposal gives up on it after its 5 s bound:
        // "save began", "disposal began", "disposal returned".
        Assert.Equal(["save began", "disposal began", "cancellation seen", "save ended: OperationCanceledException", "disposal returned"], events);
    }

    /// <summary>
    /// The same on real storage: a snapshot is taken, then the next is held mid-write until the stop. The store never
    /// lists the abandoned one, and the node restarted on the directory starts from the first snapshot and the log after
    /// it with every acknowledged write.
    /// </summary>
    [Fact]
    public async Task After_a_stop_abandoned_a_snapshot_the_node_restarts_from_the_previous_snapshot_and_the_log()
    {
        var directory = Path.Combine(Path.GetTempPath(), $"dcache-snapstop-{Guid.NewGuid():N}");
        // Small chunks and pages, so a snapshot of a few thousand keys is many chunks and pages, and the held one has
        // pages on disk when the node stops.
        var options = new StorageOptions
        {
            DataDirectory = directory,
            SnapshotLog = new LogFileOptions { PageSizeBits = 14, MemorySizeBits = 16, SegmentSizeBits = 22 },
            SnapshotChunkBytes = 4000,
        };
        const int SnapshotEntries = 2_000;
        try
        {
            var events = new ConcurrentQueue<string>();
            SnapshotCatalogueEntry taken;
            long bytesAfterTaken;
            using (var storage = OpenStorage(options))
            {
                storage.RaftLog.Bootstrap(Membership.Of([1UL]));
                var snapshots = new SecondSnapshotHeld(new SnapshotStoreAdapter(storage.Snapshots), events);
                await using var node = SingleNode.Start(storage.RaftLog, snapshots, SnapshotEntries);
                await node.WriteAsync(0, SnapshotEntries);
                await snapshots.FirstSaved.WaitAsync(Patience);
                taken = Assert.Single(storage.Snapshots.List());
                bytesAfterTaken = SnapshotFileBytes(options);

                await node.WriteAsync(SnapshotEntries, SnapshotEntries);
                await snapshots.SecondHeld.WaitAsync(Patience);
                await Eventually.WaitAsync(() => SnapshotFileBytes(options) > bytesAfterTaken, Patience, "the held snapshot's first pages on disk");
                events.Enqueue("disposal began");
                await node.DisposeAsync();
                events.Enqueue("disposal returned");
                Assert.Equal(taken.Id, Assert.Single(storage.Snapshots.List()).Id);
            }

            Assert.Equal(["second save began", "disposal began", "cancellation seen", "second save ended: OperationCanceledException", "disposal returned"], events);

            using (var storage = OpenStorage(options))
            {
                // Never catalogued, so never loaded, sent to a follower or compacted to; its chunks discarded on open.
                Assert.Equal(taken.Id, Assert.Single(storage.Snapshots.List()).Id);
                Assert.Equal(taken.Metadata.Index, storage.RaftLog.Snapshot.Index);
                Assert.True(SnapshotFileBytes(options) <= bytesAfterTaken, $"the abandoned snapshot's chunks are still on disk: {SnapshotFileBytes(options)} bytes, {bytesAfterTaken} after the first snapshot");

                await using var node = SingleNode.Start(storage.RaftLog, new SnapshotStoreAdapter(storage.Snapshots), snapshotEntries: 1_000_000);
                for (var i = 0; i < 2 * SnapshotEntries; i++)
                {
                    var reply = await node.Driver.ExecuteAsync(new Proto.Command { Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8(SingleNode.Key(i)) } }).WaitAsync(Patience);
                    Assert.Equal(SingleNode.Value(i), reply.Bulk.ToStringUtf8());
                }
            }
        }
        finally
        {
            if (Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    private static NodeStorage OpenStorage(StorageOptions options) => NodeStorage.Open(options, 1, "test");

    private static long SnapshotFileBytes(StorageOptions options) =>
        Directory.GetFiles(Path.Combine(options.DataDirectory, "snapshots")).Where(file => Path.GetFileName(file).StartsWith("snap", StringComparison.Ordinal) && !file.Contains("commit", StringComparison.Ordinal)).Sum(file => new FileInfo(file).Length);

    /// <summary>A single-node cluster's driver: its one member campaigns at once.</summary>
    private sealed class SingleNode : IAsyncDisposable
    {
        private readonly NodeMetrics _metrics = new();
        private readonly PeerTransport _transport;
        private int _disposed;

        private SingleNode(IRaftStorage storage, INodeSnapshotStore snapshots, ulong snapshotEntries)
        {
            var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), snapshotEntries, 1_000, TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(1));
            Driver = new RaftDriver(settings, storage, snapshots, new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, _metrics, NullLogger<RaftDriver>.Instance);
            _transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
            Driver.Start(_transport);
        }

        public RaftDriver Driver { get; }

        public static SingleNode Start(IRaftStorage storage, INodeSnapshotStore snapshots, ulong snapshotEntries) => new(storage, snapshots, snapshotEntries);

        public static string Key(int i) => "key:" + i;

        public static string Value(int i) => "value:" + i;

        /// <summary>Sets keys <paramref name="first"/> to <paramref name="first"/> + <paramref name="count"/>, one entry each; returns once every one is acknowledged.</summary>
        public async Task WriteAsync(int first, int count)
        {
            foreach (var batch in Enumerable.Range(first, count).Chunk(1_000))
            {
                var replies = await Task.WhenAll(batch.Select(i => Driver.ExecuteAsync(new Proto.Command
                {
                    Id = (ulong)i + 1,
                    Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8(Key(i)), Value = ByteString.CopyFromUtf8(Value(i)) },
                }))).WaitAsync(Patience);
                Assert.All(replies, reply => Assert.Equal(Proto.Reply.ResultOneofCase.Ok, reply.ResultCase));
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }

            await Driver.DisposeAsync();
            await _transport.DisposeAsync();
            _metrics.Dispose();
        }
    }

    /// <summary>Holds a snapshot's first write until the save's cancellation token is cancelled, then fails as a store does.</summary>
    private sealed class HeldSnapshots(ConcurrentQueue<string> events) : INodeSnapshotStore
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Entered => _entered.Task;

        public void Save(SnapshotMetadata metadata, Action<Stream> write, CancellationToken cancellationToken)
        {
            var outcome = "completed";
            try
            {
                events.Enqueue("save began");
                _entered.TrySetResult();
                write(new HeldStream(Stream.Null, events, throwOnCancel: true, holdAfter: 0, held: null, cancellationToken));
            }
            catch (Exception ex)
            {
                outcome = ex.GetType().Name;
                throw;
            }
            finally
            {
                events.Enqueue("save ended: " + outcome);
            }
        }

        public StoredSnapshot? Find(ulong index) => null;

        public IReadOnlyList<StoredSnapshot> All() => [];

        public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata) => throw new InvalidOperationException("no snapshots from a leader in this test");
    }

    /// <summary>
    /// The real store; the second snapshot's data is held after its first 64 KiB (many chunks already stored) until the
    /// save's token is cancelled, then goes on: the store's own check of the token is what ends it.
    /// </summary>
    private sealed class SecondSnapshotHeld(INodeSnapshotStore inner, ConcurrentQueue<string> events) : INodeSnapshotStore
    {
        private readonly TaskCompletionSource _firstSaved = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _secondHeld = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _saves;

        public Task FirstSaved => _firstSaved.Task;

        public Task SecondHeld => _secondHeld.Task;

        public void Save(SnapshotMetadata metadata, Action<Stream> write, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _saves) == 1)
            {
                inner.Save(metadata, write, cancellationToken);
                _firstSaved.TrySetResult();
                return;
            }

            var outcome = "completed";
            try
            {
                events.Enqueue("second save began");
                inner.Save(metadata, stream => write(new HeldStream(stream, events, throwOnCancel: false, holdAfter: 64 << 10, held: _secondHeld, cancellationToken)), cancellationToken);
            }
            catch (Exception ex)
            {
                outcome = ex.GetType().Name;
                throw;
            }
            finally
            {
                events.Enqueue("second save ended: " + outcome);
            }
        }

        public StoredSnapshot? Find(ulong index) => inner.Find(index);

        public IReadOnlyList<StoredSnapshot> All() => inner.All();

        public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata) => inner.BeginReceive(metadata);
    }

    /// <summary>
    /// Passes writes to <paramref name="inner"/>; once <paramref name="holdAfter"/> bytes went through, holds the next
    /// write until <paramref name="cancellation"/> is cancelled (or the test's patience runs out), then throws or goes on.
    /// </summary>
    private sealed class HeldStream(Stream inner, ConcurrentQueue<string> events, bool throwOnCancel, long holdAfter, TaskCompletionSource? held, CancellationToken cancellation) : Stream
    {
        private long _written;
        private bool _holding = true;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (_holding && _written >= holdAfter)
            {
                _holding = false;
                held?.TrySetResult();
                if (!cancellation.WaitHandle.WaitOne(Patience))
                {
                    events.Enqueue("hold ran out of patience");
                }
                else
                {
                    events.Enqueue("cancellation seen");
                    if (throwOnCancel)
                    {
                        cancellation.ThrowIfCancellationRequested();
                    }
                }
            }

            inner.Write(buffer);
            _written += buffer.Length;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
