using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Commands;

/// <summary>
/// The cluster commands of a pipelined batch that may run at the same time. A command joins the current wave unless
/// it conflicts with it: it writes a key the wave reads or writes, reads a key the wave writes, or is a keyspace read
/// (DBSIZE, INFO, KEYS) meeting a write (or the reverse); a keyspace write (FLUSHALL) conflicts with every cluster
/// command, before or after it. A conflicting command waits until the wave's replies are in, so
/// a connection always sees its own earlier writes and same-key commands apply in the order sent; commands on
/// different keys run concurrently (one round of cluster batching for a whole pipeline).
/// </summary>
internal sealed class PipelineWave
{
    private readonly HashSet<ReadOnlyMemory<byte>> _readKeys = new(ByteContentComparer.Instance);
    private readonly HashSet<ReadOnlyMemory<byte>> _writtenKeys = new(ByteContentComparer.Instance);
    private bool _hasWrite;
    private bool _readsKeyspace;
    private bool _writesKeyspace;

    public bool IsEmpty { get; private set; } = true;

    public bool ConflictsWith(CommandSpec spec, RespRequest request)
    {
        if (IsEmpty)
        {
            return false;
        }

        var flags = spec.Flags;
        if (_writesKeyspace || (flags & CommandFlags.WritesKeyspace) != 0)
        {
            return true;
        }

        if ((flags & CommandFlags.ReadsKeyspace) != 0 && _hasWrite)
        {
            return true;
        }

        var writes = (flags & CommandFlags.Write) != 0;
        if (writes && _readsKeyspace)
        {
            return true;
        }

        var (first, last, step) = spec.KeyRange(request.Count);
        for (var i = first; i <= last && first > 0; i += step)
        {
            var key = request.Memory(i);
            if (_writtenKeys.Contains(key) || (writes && _readKeys.Contains(key)))
            {
                return true;
            }
        }

        return false;
    }

    public void Add(CommandSpec spec, RespRequest request)
    {
        IsEmpty = false;
        var flags = spec.Flags;
        _readsKeyspace |= (flags & CommandFlags.ReadsKeyspace) != 0;
        _writesKeyspace |= (flags & CommandFlags.WritesKeyspace) != 0;
        var writes = (flags & CommandFlags.Write) != 0;
        _hasWrite |= writes;
        var keys = writes ? _writtenKeys : _readKeys;
        var (first, last, step) = spec.KeyRange(request.Count);
        for (var i = first; i <= last && first > 0; i += step)
        {
            keys.Add(request.Memory(i));
        }
    }

    public void Clear()
    {
        if (IsEmpty)
        {
            return;
        }

        _readKeys.Clear();
        _writtenKeys.Clear();
        _hasWrite = false;
        _readsKeyspace = false;
        _writesKeyspace = false;
        IsEmpty = true;
    }

    /// <summary>Compares keys by content. HashCode is seeded randomly per process, so clients cannot aim collisions.</summary>
    private sealed class ByteContentComparer : IEqualityComparer<ReadOnlyMemory<byte>>
    {
        public static readonly ByteContentComparer Instance = new();

        public bool Equals(ReadOnlyMemory<byte> x, ReadOnlyMemory<byte> y) => x.Span.SequenceEqual(y.Span);

        public int GetHashCode(ReadOnlyMemory<byte> obj)
        {
            var hash = default(HashCode);
            hash.AddBytes(obj.Span);
            return hash.ToHashCode();
        }
    }
}
