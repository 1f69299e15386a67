namespace Dcache.Cache;

/// <summary>
/// Long reads that run a slice at a time between writes (<see cref="WriteOrderWalk"/>, <see cref="MultiKeyRead"/>): each is
/// told before a key changes, so that it can keep the key as it stood when the read began.
/// </summary>
public sealed partial class CacheStateMachine
{
    // Few at a time (one per long read in progress): every write of a key tells each of them.
    private readonly List<IKeyChangeObserver> _observers = [];

    /// <summary>Starts a walk of the keys as they are now; end it with <see cref="EndObserving"/>.</summary>
    internal WriteOrderWalk BeginWalk()
    {
        var walk = new WriteOrderWalk(_oldestWritten, _writeSequence, _entries.Count);
        _observers.Add(walk);
        return walk;
    }

    /// <summary>
    /// MGET (<paramref name="values"/>) or EXISTS as of now, taken a slice at a time (<see cref="MultiKeyRead.Step"/>) while
    /// writes go on applying between slices, judging expiry at <paramref name="nowMs"/>. Must run on the thread that applies
    /// writes.
    /// </summary>
    public MultiKeyRead BeginMultiKeyRead(ReadOnlyMemory<byte>[] keys, bool values, long nowMs)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var read = new MultiKeyRead(this, _entriesBySpan, _writeSequence, keys, values, nowMs);
        _observers.Add(read);
        return read;
    }

    /// <summary>Long reads the machine still tells about writes (tests).</summary>
    internal int WalkCount => _observers.Count;

    /// <summary>Stops telling <paramref name="observer"/> about writes (it is done, or abandoned).</summary>
    internal void EndObserving(IKeyChangeObserver observer) => _observers.Remove(observer);

    private void NoteChangingForWalks(CacheEntry entry)
    {
        foreach (var observer in _observers)
        {
            observer.NoteChanging(entry);
        }
    }

    private void DetachWalks()
    {
        foreach (var observer in _observers)
        {
            observer.Detach();
        }

        _observers.Clear();
    }
}

/// <summary>A long read in progress, told of every change to the keys of the instant it began.</summary>
internal interface IKeyChangeObserver
{
    /// <summary>
    /// Called before <paramref name="entry"/> is written, moved or removed (before its value or expiry changes), on the
    /// thread that applies.
    /// </summary>
    void NoteChanging(CacheEntry entry);

    /// <summary>The machine dropped the keyspace the read goes over; it is frozen from now on and needs no more notes.</summary>
    void Detach();
}
