using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Globalization;
using Dcache.Protocol.Backup;
using Dcache.Storage;
using Google.Protobuf;

namespace Dcache.Ctl;

/// <summary>
/// The backup file `dcachectl snapshot save` writes (format version 1, integers little-endian):
/// <code>
/// "DCBACKUP" magic (8) | u32 format version (=1) | u32 header length | header (protobuf SnapshotHeader, protos/backup.proto)
/// data frames: u32 length (1 .. 4 MiB) | that many bytes of the cache snapshot   (repeated)
/// u32 0 (end of data) | u64 data size | u32 CRC-32C of every byte before it
/// </code>
/// The data is the cache state machine's own snapshot format (src/Cache/CacheSnapshot.cs, with its SHA-256 trailer).
/// Frames let the file be written as the data streams in, without knowing its size first.
/// </summary>
internal static class SnapshotFile
{
    /// <summary>FILE's full path; an empty FILE (an unset variable) is a usage error, not a path.</summary>
    public static string FullPath(string file) =>
        string.IsNullOrWhiteSpace(file) ? throw new FormatException("FILE is empty: give the snapshot file's path") : Path.GetFullPath(file);

    public const uint FormatVersion = 1;
    public const int MaxHeaderBytes = 1 << 20;
    public const int MaxFrameBytes = 4 << 20;

    public static ReadOnlySpan<byte> Magic => "DCBACKUP"u8;
}

/// <summary>A snapshot file that is not one, or is damaged: the message says which and where, for the operator.</summary>
internal sealed class SnapshotFileException(string message) : Exception(message);

/// <summary>
/// Writes a backup file to FILE.tmp beside FILE, fsyncs it, renames it to FILE and fsyncs the directory, so FILE is
/// either absent or complete. Disposing before <see cref="Finish"/> deletes the temp file.
/// </summary>
internal sealed class SnapshotFileWriter : IDisposable
{
    private readonly string _path;
    private readonly string _tempPath;
    private readonly FileStream _file;
    private uint _crc;
    private ulong _dataSize;
    private bool _finished;

    // The cache state ends with the SHA-256 of everything before it: hashed as it arrives, the last 32 bytes held back.
    private readonly IncrementalHash _stateHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly byte[] _heldBack = new byte[StateDigestBytes];
    private int _heldBackLength;
    private const int StateDigestBytes = 32;

    public SnapshotFileWriter(string path)
    {
        _path = SnapshotFile.FullPath(path);
        if (File.Exists(_path))
        {
            throw new SnapshotFileException($"{_path} already exists; a backup never overwrites a file");
        }

        _tempPath = _path + ".tmp";
        try
        {
            _file = new FileStream(_tempPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotFileException($"cannot create {_tempPath}: {ex.Message}");
        }
    }

    public ulong DataSize => _dataSize;

    public uint DataCrc { get; private set; }

    public void WriteHeader(SnapshotHeader header)
    {
        Span<byte> prefix = stackalloc byte[16];
        SnapshotFile.Magic.CopyTo(prefix);
        BinaryPrimitives.WriteUInt32LittleEndian(prefix[8..], SnapshotFile.FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(prefix[12..], (uint)header.CalculateSize());
        Write(prefix);
        Write(header.ToByteArray());
    }

    public void WriteData(ReadOnlySpan<byte> data)
    {
        Span<byte> length = stackalloc byte[4];
        while (!data.IsEmpty)
        {
            var frame = data[..Math.Min(data.Length, SnapshotFile.MaxFrameBytes)];
            BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)frame.Length);
            Write(length);
            Write(frame);
            DataCrc = Crc32C.Append(DataCrc, frame);
            HashHoldingBackTheLastBytes(frame);
            _dataSize += (ulong)frame.Length;
            data = data[frame.Length..];
        }
    }

    private void HashHoldingBackTheLastBytes(ReadOnlySpan<byte> data)
    {
        var total = _heldBackLength + data.Length;
        if (total <= StateDigestBytes)
        {
            data.CopyTo(_heldBack.AsSpan(_heldBackLength));
            _heldBackLength = total;
            return;
        }

        var release = total - StateDigestBytes;
        var fromHeld = Math.Min(release, _heldBackLength);
        _stateHash.AppendData(_heldBack.AsSpan(0, fromHeld));
        var fromData = release - fromHeld;
        _stateHash.AppendData(data[..fromData]);
        Span<byte> next = stackalloc byte[StateDigestBytes];
        var stillHeld = _heldBackLength - fromHeld;
        _heldBack.AsSpan(fromHeld, stillHeld).CopyTo(next);
        data[fromData..].CopyTo(next[stillHeld..]);
        next.CopyTo(_heldBack);
        _heldBackLength = StateDigestBytes;
    }

    /// <summary>
    /// Keeps the file (FILE.tmp renamed to FILE, synced) once the cache state's own SHA-256 holds: the transport's
    /// size and CRC only say the bytes arrived as sent, not that the node sent a whole state.
    /// </summary>
    public void Finish()
    {
        Span<byte> digest = stackalloc byte[StateDigestBytes];
        if (_heldBackLength < StateDigestBytes || !_stateHash.TryGetHashAndReset(digest, out _) || !digest.SequenceEqual(_heldBack))
        {
            throw new SnapshotFileException($"the cache state received for {_path} fails its SHA-256: it was cut short or damaged before it was sent");
        }

        Span<byte> end = stackalloc byte[12];
        BinaryPrimitives.WriteUInt32LittleEndian(end, 0);
        BinaryPrimitives.WriteUInt64LittleEndian(end[4..], _dataSize);
        Write(end);
        Span<byte> crc = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(crc, _crc);
        _file.Write(crc);
        _file.Flush(flushToDisk: true);
        _file.Dispose();
        File.Move(_tempPath, _path, overwrite: false);
        NativeFileSync.SyncDirectory(Path.GetDirectoryName(_path)!);
        _finished = true;
    }

    public void Dispose()
    {
        try
        {
            // Flushes what is buffered: after a failed write (a full disk) this fails again.
            _file.Dispose();
        }
        finally
        {
            _stateHash.Dispose();
            if (!_finished)
            {
                File.Delete(_tempPath);
            }
        }
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        _crc = Crc32C.Append(_crc, bytes);
        _file.Write(bytes);
    }
}

/// <summary>
/// Reads a backup file front to back: the header on open, then the data as a stream (<see cref="Data"/>); once the data
/// is read to its end, the trailer's size and checksum are checked. Every problem is a <see cref="SnapshotFileException"/>.
/// </summary>
internal sealed class SnapshotFileReader : IDisposable
{
    private readonly string _path;
    private readonly FileStream _file;
    private uint _crc;
    private long _position;

    public SnapshotFileReader(string path)
    {
        _path = SnapshotFile.FullPath(path);
        if (Directory.Exists(_path))
        {
            // .NET reports opening a directory as "Access to the path is denied", which sends one to check permissions.
            throw new SnapshotFileException($"{_path} is a directory: name the backup file in it");
        }

        try
        {
            _file = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new SnapshotFileException($"cannot open {_path}: {ex.Message}");
        }

        if (!_file.CanSeek)
        {
            // Verify and restore read a file more than once (its checksum, then what it holds).
            _file.Dispose();
            throw new SnapshotFileException($"{_path} is not a regular file (a pipe?): copy it to a file first");
        }

        Span<byte> prefix = stackalloc byte[16];
        if (_file.Length < prefix.Length || !TryRead(prefix) || !prefix[..8].SequenceEqual(SnapshotFile.Magic))
        {
            throw new SnapshotFileException($"{_path} is not a Dcache snapshot file (it does not begin with \"DCBACKUP\")");
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(prefix[8..]);
        if (version != SnapshotFile.FormatVersion)
        {
            throw Damaged($"format version {version} is not one this build reads ({SnapshotFile.FormatVersion})", 8);
        }

        var headerLength = BinaryPrimitives.ReadUInt32LittleEndian(prefix[12..]);
        if (headerLength > SnapshotFile.MaxHeaderBytes)
        {
            throw Damaged($"a header of {headerLength} bytes is impossible", 12);
        }

        var header = new byte[headerLength];
        ReadExactly(header, "the header");
        try
        {
            Header = SnapshotHeader.Parser.ParseFrom(header);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw Damaged($"the header does not decode ({ex.Message})", 16);
        }

        Data = new FrameStream(this);
    }

    public SnapshotHeader Header { get; }

    /// <summary>The cache snapshot bytes; reading past their end checks the trailer.</summary>
    public Stream Data { get; }

    public ulong DataSize { get; private set; }

    public uint FileCrc { get; private set; }

    public long FileSize => _file.Length;

    /// <summary>Reads the rest of the data (discarding it) and checks the trailer.</summary>
    public void ReadToEnd() => Data.CopyTo(Stream.Null);

    public void Dispose() => _file.Dispose();

    private SnapshotFileException Damaged(string problem, long offset) =>
        new(string.Create(CultureInfo.InvariantCulture, $"{_path} is damaged: {problem} (at byte {offset} of {_file.Length})"));

    private bool TryRead(Span<byte> into)
    {
        var read = _file.ReadAtLeast(into, into.Length, throwOnEndOfStream: false);
        if (read < into.Length)
        {
            return false;
        }

        _crc = Crc32C.Append(_crc, into);
        _position += into.Length;
        return true;
    }

    private void ReadExactly(Span<byte> into, string what)
    {
        var at = _position;
        if (!TryRead(into))
        {
            throw Damaged($"the file ends inside {what}: it is truncated", at);
        }
    }

    /// <summary>Returns the next frame's bytes into <paramref name="buffer"/>, or 0 at the end of the data (trailer checked).</summary>
    private int NextFrame(ref byte[] buffer)
    {
        Span<byte> length = stackalloc byte[4];
        ReadExactly(length, "the data");
        var frameLength = BinaryPrimitives.ReadUInt32LittleEndian(length);
        if (frameLength == 0)
        {
            CheckTrailer();
            return 0;
        }

        if (frameLength > SnapshotFile.MaxFrameBytes)
        {
            throw Damaged($"a data frame of {frameLength} bytes is impossible", _position - 4);
        }

        if (buffer.Length < frameLength)
        {
            buffer = new byte[frameLength];
        }

        ReadExactly(buffer.AsSpan(0, (int)frameLength), "the data");
        DataSize += frameLength;
        return (int)frameLength;
    }

    private void CheckTrailer()
    {
        Span<byte> size = stackalloc byte[8];
        ReadExactly(size, "the trailer");
        var computed = _crc;
        Span<byte> crc = stackalloc byte[4];
        var at = _position;
        if (_file.ReadAtLeast(crc, 4, throwOnEndOfStream: false) < 4)
        {
            throw Damaged("the file ends inside the checksum: it is truncated", at);
        }

        var stored = BinaryPrimitives.ReadUInt32LittleEndian(crc);
        if (stored != computed)
        {
            throw Damaged(string.Create(CultureInfo.InvariantCulture, $"its CRC-32C is {computed:x8} but it was written as {stored:x8}"), at);
        }

        if (BinaryPrimitives.ReadUInt64LittleEndian(size) != DataSize)
        {
            throw Damaged(string.Create(CultureInfo.InvariantCulture, $"it holds {DataSize} data bytes but records {BinaryPrimitives.ReadUInt64LittleEndian(size)}"), at - 8);
        }

        if (_file.Position != _file.Length)
        {
            throw Damaged(string.Create(CultureInfo.InvariantCulture, $"{_file.Length - _file.Position} bytes follow the checksum"), _file.Position);
        }

        FileCrc = stored;
    }

    private sealed class FrameStream(SnapshotFileReader reader) : Stream
    {
        private byte[] _frame = new byte[1 << 16];
        private int _offset;
        private int _length;
        private bool _ended;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            while (_offset == _length && !_ended)
            {
                _length = reader.NextFrame(ref _frame);
                _offset = 0;
                _ended = _length == 0;
            }

            var take = Math.Min(buffer.Length, _length - _offset);
            _frame.AsSpan(_offset, take).CopyTo(buffer);
            _offset += take;
            return take;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
