namespace Dcache.Cache;

/// <summary>
/// A snapshot of the replicated state at one applied index, captured a slice of keys at a time while the machine goes
/// on applying writes between slices (<see cref="CacheStateMachine.BeginSnapshotCapture"/>). The result is byte for byte
/// the snapshot <see cref="CacheStateMachine.CaptureSnapshot"/> would have taken at that index: the keys come from a
/// <see cref="WriteOrderWalk"/>, which yields each key of the instant with its value and expiry of the instant, and the
/// rest of the state (applied index, clock, sessions, the revision floors and removal table) is copied when the capture begins.
/// </summary>
public sealed class SnapshotCapture
{
    // Keys are gathered in chunks below the large-object threshold (24-byte records): no single allocation, or copy
    // of a growing array, is O(keys).
    private const int ChunkKeys = 2048;

    private readonly CacheStateMachine _machine;
    private readonly WriteOrderWalk _walk;
    private readonly CacheSnapshot.SessionRecord[] _sessions;
    private readonly CacheSnapshot.RevisionState _revisions;
    private readonly CacheSnapshot.StoredKey[][] _chunks;
    private readonly WriteOrderWalk.Visitor _collect;
    private int _collected;
    private bool _ended;

    internal SnapshotCapture(CacheStateMachine machine, WriteOrderWalk walk, ulong appliedIndex, long clockMs, CacheSnapshot.SessionRecord[] sessions, CacheSnapshot.RevisionState revisions)
    {
        _revisions = revisions;
        _machine = machine;
        _walk = walk;
        AppliedIndex = appliedIndex;
        ClockMs = clockMs;
        _sessions = sessions;
        _chunks = new CacheSnapshot.StoredKey[(walk.KeyCount + ChunkKeys - 1) / ChunkKeys][];
        _collect = Collect;
    }

    /// <summary>The applied index the snapshot is of.</summary>
    public ulong AppliedIndex { get; }

    public long ClockMs { get; }

    /// <summary>Keys in the snapshot (stored at its instant, expired or not).</summary>
    public int KeyCount => _walk.KeyCount;

    public int SessionCount => _sessions.Length;

    public bool IsDone => _walk.IsDone;

    /// <summary>
    /// Captures up to <paramref name="maxKeys"/> more keys; true when done. Must run on the thread that applies writes,
    /// between writes.
    /// </summary>
    public bool Step(int maxKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        if (!_walk.IsDone)
        {
            _walk.Step(maxKeys, _collect);
        }

        if (_walk.IsDone)
        {
            End();
        }

        return _walk.IsDone;
    }

    /// <summary>Gives the capture up before it is done (the machine stops keeping keys aside for it).</summary>
    public void Abandon() => End();

    /// <summary>The snapshot, once <see cref="IsDone"/>: immutable, it may be written from any thread.</summary>
    public CacheSnapshot Result()
    {
        if (!IsDone)
        {
            throw new InvalidOperationException("The snapshot capture has not visited every key yet.");
        }

        return new CacheSnapshot(AppliedIndex, ClockMs, _chunks, KeyCount, _sessions, _revisions);
    }

    private void End()
    {
        if (!_ended)
        {
            _ended = true;
            _machine.EndObserving(_walk);
        }
    }

    private void Collect(CacheEntry entry, ReadOnlyMemory<byte> value, long expireAtMs, ulong revision)
    {
        var (chunk, slot) = Math.DivRem(_collected++, ChunkKeys);
        var keys = _chunks[chunk] ??= new CacheSnapshot.StoredKey[Math.Min(ChunkKeys, KeyCount - (chunk * ChunkKeys))];
        keys[slot] = new CacheSnapshot.StoredKey(entry.Key, value, expireAtMs, revision);
    }
}
