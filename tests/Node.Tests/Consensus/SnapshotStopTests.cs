using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

public sealed class SnapshotStopTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A node stopping while an automatic snapshot is written: the host closes storage once the driver is disposed, so
    /// disposal must not return while the snapshot is still being written (the store was closed under the writer, which
    /// then spun inside FasterLog for good).
    /// </summary>
    [Fact]
    public async Task Disposal_waits_for_the_snapshot_being_written()
    {
        var disk = MemoryStorage.Bootstrap(Membership.Of([1UL]));
        using var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 5_000, 1_000, TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(1));
        RaftDriver? driver = null;
        // The snapshot's first write goes on only once the loop has stopped: it is in progress when disposal begins.
        var snapshots = new HeldSnapshots(() => driver!.Completion.IsCompleted);
        driver = new RaftDriver(settings, disk, snapshots, new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance);
        await using var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, driver.Clocks, driver, NullLogger<PeerTransport>.Instance);
        driver.Start(transport);
        try
        {
            ulong id = 0;
            foreach (var batch in Enumerable.Range(0, 10_000).Chunk(1_000))
            {
                var replies = await Task.WhenAll(batch.Select(i => driver.ExecuteAsync(new Proto.Command
                {
                    Id = ++id,
                    Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("key:" + i), Value = ByteString.CopyFromUtf8("value") },
                }))).WaitAsync(Patience);
                Assert.All(replies, reply => Assert.Equal(Proto.Reply.ResultOneofCase.Ok, reply.ResultCase));
            }

            await snapshots.Entered.WaitAsync(Patience);
        }
        finally
        {
            await driver.DisposeAsync();
        }

        Assert.True(snapshots.Ended, "the driver's disposal returned while its snapshot was still being written");
        Assert.Null(snapshots.Failure);
    }

    /// <summary>Holds the first write of a snapshot until <paramref name="release"/> says so, commits slowly, and records when the save ended.</summary>
    private sealed class HeldSnapshots(Func<bool> release) : INodeSnapshotStore
    {
        private static readonly TimeSpan SlowCommit = TimeSpan.FromMilliseconds(300);
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _ended;

        public Task Entered => _entered.Task;

        public bool Ended => _ended;

        public Exception? Failure { get; private set; }

        public void Save(SnapshotMetadata metadata, Action<Stream> write)
        {
            try
            {
                _entered.TrySetResult();
                write(new HeldStream(release));
                // A slow disk's durable commit (as TestOnlySlowDisk makes one): the save is still going on well after the
                // loop stopped, so a disposal that does not wait for it returns first.
                Thread.Sleep(SlowCommit);
            }
            catch (Exception ex)
            {
                Failure = ex;
            }
            finally
            {
                _ended = true;
            }
        }

        public StoredSnapshot? Find(ulong index) => null;

        public IReadOnlyList<StoredSnapshot> All() => [];

        public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata) => throw new InvalidOperationException("no snapshots from a leader in this test");
    }

    private sealed class HeldStream(Func<bool> release) : Stream
    {
        private bool _held = true;

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (_held && !release())
            {
                Assert.True(DateTime.UtcNow < deadline, "the loop did not stop");
                Thread.Sleep(1);
            }

            _held = false;
        }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
