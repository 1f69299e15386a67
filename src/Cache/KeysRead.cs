namespace Dcache.Cache;

/// <summary>
/// KEYS taken a slice at a time: the keys live at the read's time among those stored at the instant it began, in that
/// instant's write order, however many writes apply between slices (<see cref="WriteOrderWalk"/>). The slices only
/// collect references to the keys (immutable byte arrays); matching a pattern and building the reply
/// (<see cref="ToReply"/>) need nothing of the machine and may run on any thread once it is done.
/// </summary>
public sealed class KeysRead
{
    private readonly CacheStateMachine _machine;
    private readonly WriteOrderWalk _walk;
    private readonly long _nowMs;
    private readonly List<byte[]> _keys;
    private readonly WriteOrderWalk.Visitor _collect;

    internal KeysRead(CacheStateMachine machine, WriteOrderWalk walk, long nowMs)
    {
        _machine = machine;
        _walk = walk;
        _nowMs = nowMs;
        _keys = new List<byte[]>(walk.KeyCount);
        _collect = Collect;
    }

    /// <summary>True once every key of the instant was looked at.</summary>
    public bool IsDone => _walk.IsDone;

    /// <summary>
    /// Looks at up to <paramref name="maxKeys"/> more keys; true when done. Must run on the thread that applies writes,
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
            // Also when the walk had no key to yield (an empty cache): left registered, every later write would tell it.
            _machine.EndObserving(_walk);
        }

        return _walk.IsDone;
    }

    /// <summary>Gives the read up before it is done (the machine stops keeping keys aside for it).</summary>
    public void Abandon() => _machine.EndObserving(_walk);

    /// <summary>
    /// KEYS's reply: the keys <paramref name="filter"/> accepts (all of them without one), in order. Touches nothing of
    /// the machine: call it on any thread once <see cref="IsDone"/>.
    /// </summary>
    public CacheReply ToReply(KeyFilter? filter)
    {
        if (!IsDone)
        {
            throw new InvalidOperationException("KEYS has not looked at every key yet.");
        }

        var replies = new List<CacheReply>(filter is null ? _keys.Count : 0);
        foreach (var key in _keys)
        {
            if (filter is null || filter(key))
            {
                // Keys are never mutated once stored, so the reply may share them.
                replies.Add(CacheReply.FromBulk(key));
            }
        }

        return CacheReply.FromArray([.. replies]);
    }

    private void Collect(CacheEntry entry, ReadOnlyMemory<byte> value, long expireAtMs, ulong revision)
    {
        if (expireAtMs > _nowMs)
        {
            _keys.Add(entry.Key);
        }
    }
}
