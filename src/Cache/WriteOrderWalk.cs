namespace Dcache.Cache;

/// <summary>
/// The keys in write order as they stood at one instant (when the walk began), visited a slice at a time while the
/// machine goes on applying writes between slices. What long reads (KEYS, building SCAN's index) use so that no single
/// step holds the apply thread for O(n).
/// </summary>
/// <remarks>
/// <para>The write order is sorted by <see cref="CacheEntry.WriteSequence"/>, and a write moves its key to the newest end
/// with a new, larger number, so at any time the live list is: the keys already visited, the keys still to visit (each
/// unchanged since the walk began), and keys written since, whose numbers exceed <see cref="_lastSequence"/>. A key still
/// to visit that is about to be written or removed is kept aside first, with its value and expiry as they were
/// (<see cref="NoteChanging"/>), and merged back in at its old place; so the walk yields exactly the keys of the
/// instant, in that instant's order, each with its value and expiry of the instant (what a snapshot captured a slice at
/// a time needs). Keys are immutable and values are replaced rather than mutated, so keeping the value array's
/// reference is keeping the value; the expiry is copied: nothing a visitor sees changes under it.</para>
/// <para>FLUSHALL and loading a snapshot swap the whole keyspace for a new one and never touch the old entries again, so
/// a walk then finishes over the old list as it stands (<see cref="Detach"/>).</para>
/// </remarks>
internal sealed class WriteOrderWalk : IKeyChangeObserver
{
    /// <summary>What a walk yields for each key: the entry (for its key and identity) and its value, expiry and revision at the walk's instant.</summary>
    internal delegate void Visitor(CacheEntry entry, ReadOnlyMemory<byte> value, long expireAtMs, ulong revision);

    private readonly long _lastSequence;
    private readonly PriorityQueue<(CacheEntry Entry, ReadOnlyMemory<byte> Value, long ExpireAtMs, ulong Revision), long> _keptAside = new();
    private CacheEntry? _next;
    private bool _detached;

    internal WriteOrderWalk(CacheEntry? oldest, long lastSequence, int keyCount)
    {
        _next = oldest;
        _lastSequence = lastSequence;
        KeyCount = keyCount;
    }

    /// <summary>How many keys the walk yields in all: those stored when it began, expired or not.</summary>
    public int KeyCount { get; }

    /// <summary>How many keys it has yielded so far.</summary>
    public int Visited { get; private set; }

    /// <summary>True once every key of the instant was yielded.</summary>
    public bool IsDone => Visited == KeyCount;

    /// <summary>
    /// Yields up to <paramref name="maxKeys"/> more keys, in order, to <paramref name="visit"/> (the entry
    /// and its value and expiry at the walk's instant). Must run on the thread that applies writes, never during one. True
    /// when the walk is done.
    /// </summary>
    internal bool Step(int maxKeys, Visitor visit)
    {
        for (var i = 0; i < maxKeys && !IsDone; i++)
        {
            var fromList = _next is not null && _next.WriteSequence <= _lastSequence ? _next : null;
            if (_keptAside.TryPeek(out var kept, out var keptSequence) && (fromList is null || keptSequence < fromList.WriteSequence))
            {
                _keptAside.Dequeue();
                visit(kept.Entry, kept.Value, kept.ExpireAtMs, kept.Revision);
            }
            else if (fromList is not null)
            {
                _next = fromList.Newer;
                visit(fromList, fromList.Value, fromList.ExpireAtMs, fromList.Revision);
            }
            else
            {
                throw new InvalidOperationException($"A write-order walk ran out after {Visited} of its {KeyCount} keys: a write changed a key without telling it.");
            }

            Visited++;
        }

        return IsDone;
    }

    /// <summary>
    /// Called before <paramref name="entry"/> is written, moved or removed (before its value or expiry changes): a key the
    /// walk has yet to reach is kept aside as it is now, value and expiry, and the walk's place moves past it.
    /// </summary>
    public void NoteChanging(CacheEntry entry)
    {
        if (_detached || _next is null || entry.WriteSequence > _lastSequence || entry.WriteSequence < _next.WriteSequence)
        {
            // Already visited, written after the walk began, or in a keyspace the machine no longer holds.
            return;
        }

        _keptAside.Enqueue((entry, entry.Value, entry.ExpireAtMs, entry.Revision), entry.WriteSequence);
        if (ReferenceEquals(entry, _next))
        {
            _next = entry.Newer;
        }
    }

    /// <summary>The machine dropped the keyspace this walk goes over; it is frozen from now on and needs no more notes.</summary>
    public void Detach() => _detached = true;
}
