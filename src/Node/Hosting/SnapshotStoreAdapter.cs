using Dcache.Node.Consensus;
using Dcache.Raft;
using Dcache.Storage;

namespace Dcache.Node.Hosting;

/// <summary>The node's view of <see cref="SnapshotStore"/>: snapshots as streams, received ones checked by CRC-32C before they are kept.</summary>
public sealed class SnapshotStoreAdapter(SnapshotStore store) : INodeSnapshotStore
{
    public void Save(SnapshotMetadata metadata, Action<Stream> write, CancellationToken cancellationToken)
    {
        using var writer = store.BeginSnapshot(metadata, cancellationToken);
        using (var stream = new SnapshotWriterStream(writer))
        {
            write(stream);
        }

        writer.Complete();
    }

    public StoredSnapshot? Find(ulong index) => All().FirstOrDefault(s => s.Metadata.Index == index);

    public IReadOnlyList<StoredSnapshot> All() =>
        store.List().Select(entry => new StoredSnapshot(entry.Metadata, entry.Crc32C, entry.SizeBytes, () => new SnapshotReaderStream(store.OpenRead(entry)))).ToList();

    public IReceivedSnapshotWriter BeginReceive(SnapshotMetadata metadata) => new ReceivedWriter(store.BeginSnapshot(metadata));

    private sealed class ReceivedWriter(SnapshotWriter writer) : IReceivedSnapshotWriter
    {
        private uint _crc;

        public void Write(ReadOnlySpan<byte> chunk)
        {
            _crc = Crc32C.Append(_crc, chunk);
            writer.Write(chunk);
        }

        public void Commit(ulong checksum)
        {
            if (_crc != checksum)
            {
                throw new InvalidDataException($"snapshot {writer.Metadata.Index} arrived with CRC-32C {_crc:x8}, but the sender computed {checksum:x8}");
            }

            writer.Complete();
        }

        public void Dispose() => writer.Dispose();
    }

    /// <summary>A write-only stream feeding a <see cref="SnapshotWriter"/>.</summary>
    private sealed class SnapshotWriterStream(SnapshotWriter writer) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Write(byte[] buffer, int offset, int count) => writer.Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer) => writer.Write(buffer);

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>A read-only stream over a <see cref="SnapshotReader"/>'s chunks.</summary>
    private sealed class SnapshotReaderStream(SnapshotReader reader) : Stream
    {
        private ReadOnlyMemory<byte> _current;
        private bool _ended;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => reader.Entry.SizeBytes;

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            while (_current.IsEmpty && !_ended)
            {
                if (!reader.TryReadChunk(out _current))
                {
                    _ended = true;
                }
            }

            var take = Math.Min(buffer.Length, _current.Length);
            _current.Span[..take].CopyTo(buffer);
            _current = _current[take..];
            return take;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                reader.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
