namespace Dcache.Cache;

/// <summary>
/// MGET, EXISTS or WATCH over many keys taken a slice at a time: each key as it stood at the instant the read began,
/// however many writes apply between slices, so the read is still one atomic read of that instant. What the driver loop
/// uses for multi-key reads too large to serve in one round (a 16 MiB request holds about a million keys: a second or
/// more of lookups).
/// </summary>
/// <remarks>
/// A key stored at the instant and not changed since has a <see cref="CacheEntry.WriteSequence"/> no greater than the
/// instant's; every change of a key moves it past that (or removes it) and tells the read first
/// (<see cref="IKeyChangeObserver.NoteChanging"/>), which keeps the key's value and expiry of the instant aside. So a key
/// looked up later is: the entry, if unchanged since; else what was kept aside; else absent at the instant (created
/// since). Keys are immutable and values replaced rather than mutated, so keeping the value array's reference is keeping
/// the value. FLUSHALL and loading a snapshot swap the keyspace for a new one and never touch the old one again, so the
/// read goes on over the old one (<see cref="IKeyChangeObserver.Detach"/>).
/// </remarks>
public sealed class MultiKeyRead : IKeyChangeObserver
{
    private readonly CacheStateMachine _machine;
    private readonly Dictionary<byte[], CacheEntry>.AlternateLookup<ReadOnlySpan<byte>> _keyspace;
    private readonly ReadOnlyMemory<byte>[] _keys;
    private readonly long _nowMs;
    private readonly long _lastSequence;
    private readonly Dictionary<byte[], (ReadOnlyMemory<byte> Value, long ExpireAtMs)> _keptAside;
    private readonly Dictionary<byte[], (ReadOnlyMemory<byte> Value, long ExpireAtMs)>.AlternateLookup<ReadOnlySpan<byte>> _keptAsideBySpan;
    private readonly CacheReply[]? _values;

    // WATCH: the applied index of the instant, answered first, then 1 or 0 per key (live or not), as CacheStateMachine.Watch.
    private readonly ulong? _watchedAt;
    private long _existing;
    private int _next;
    private bool _detached;

    internal MultiKeyRead(
        CacheStateMachine machine,
        Dictionary<byte[], CacheEntry>.AlternateLookup<ReadOnlySpan<byte>> keyspace,
        long lastSequence,
        ReadOnlyMemory<byte>[] keys,
        bool values,
        long nowMs,
        ulong? watchedAt = null)
    {
        _machine = machine;
        _keyspace = keyspace;
        _lastSequence = lastSequence;
        _keys = keys;
        _nowMs = nowMs;
        _watchedAt = watchedAt;
        _values = watchedAt is not null ? new CacheReply[keys.Length + 1] : values ? new CacheReply[keys.Length] : null;
        _keptAside = new Dictionary<byte[], (ReadOnlyMemory<byte> Value, long ExpireAtMs)>(ByteKeyComparer.CreateRandomized());
        _keptAsideBySpan = _keptAside.GetAlternateLookup<ReadOnlySpan<byte>>();
    }

    /// <summary>True once every key was looked up.</summary>
    public bool IsDone => _next == _keys.Length;

    /// <summary>Keys still to look up.</summary>
    public int Remaining => _keys.Length - _next;

    /// <summary>
    /// Looks up to <paramref name="maxKeys"/> more keys up; true when done. Must run on the thread that applies writes,
    /// between writes.
    /// </summary>
    public bool Step(int maxKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        var end = _next + Math.Min(maxKeys, _keys.Length - _next);
        for (; _next < end; _next++)
        {
            var found = TryFindAtInstant(_keys[_next].Span, out var value);
            if (_watchedAt is not null)
            {
                // Not a hit or a miss: WATCH reads no value, and in one call it counted none either.
                _values![_next + 1] = CacheReply.FromInteger(found ? 1 : 0);
                continue;
            }

            _machine.CountRead(found);
            if (_values is not null)
            {
                _values[_next] = found ? CacheReply.FromBulk(value) : CacheReply.Nil;
            }
            else if (found)
            {
                _existing++;
            }
        }

        if (IsDone)
        {
            // Also when there was nothing to look up: left registered, every later write would tell it.
            _machine.EndObserving(this);
        }

        return IsDone;
    }

    /// <summary>Gives the read up before it is done (the machine stops telling it of writes).</summary>
    public void Abandon() => _machine.EndObserving(this);

    /// <summary>
    /// The reply: MGET's array of values and nils, EXISTS's count (a key named twice counted twice), or WATCH's applied
    /// index then 1 or 0 per key. Touches nothing of the machine: call it on any thread once <see cref="IsDone"/>.
    /// </summary>
    public CacheReply ToReply()
    {
        if (!IsDone)
        {
            throw new InvalidOperationException("The read has not looked every key up yet.");
        }

        if (_watchedAt is { } watchedAt)
        {
            _values![0] = CacheReply.FromInteger((long)watchedAt);
        }

        return _values is null ? CacheReply.FromInteger(_existing) : CacheReply.FromArray(_values);
    }

    void IKeyChangeObserver.NoteChanging(CacheEntry entry)
    {
        if (_detached || entry.WriteSequence > _lastSequence || IsDone)
        {
            // Already changed since the instant (kept then), created since, or in a keyspace the machine no longer holds.
            return;
        }

        _keptAside.TryAdd(entry.Key, (entry.Value, entry.ExpireAtMs));
    }

    void IKeyChangeObserver.Detach() => _detached = true;

    private bool TryFindAtInstant(ReadOnlySpan<byte> key, out ReadOnlyMemory<byte> value)
    {
        long expireAtMs;
        if (_keyspace.TryGetValue(key, out var entry) && entry.WriteSequence <= _lastSequence)
        {
            (value, expireAtMs) = (entry.Value, entry.ExpireAtMs);
        }
        else if (!_keptAsideBySpan.TryGetValue(key, out var kept))
        {
            value = ReadOnlyMemory<byte>.Empty;
            return false;
        }
        else
        {
            (value, expireAtMs) = kept;
        }

        return expireAtMs > _nowMs;
    }
}
