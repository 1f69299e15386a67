namespace Dcache.TestSupport.Linearizability;

/// <summary>
/// The search's memo: the set of (linearized operations, model state) pairs already explored. Reaching the same
/// pair again by another order cannot succeed where the first visit failed, so the search prunes it.
/// </summary>
/// <remarks>
/// Stored exactly (no false positives, which would make the checker report violations that are not there), but
/// compactly: operations are numbered in call order and the search only ever lifts operations that began before
/// the earliest return still outstanding, so a linearized set is a run of full words followed by a few words of
/// operations concurrent with the frontier. Each entry keeps only that window (the index of the first word that
/// is not all ones, and the words up to the last non-zero one) in a shared arena, and the hash is maintained
/// incrementally by the caller (Zobrist hashing) so neither lookups nor hashing scan the whole set.
/// </remarks>
internal sealed class StateCache
{
    private Entry[] _table = new Entry[1024];
    private int _count;
    private ulong[] _arena = new ulong[1024];
    private int _arenaUsed;

    public int Count => _count;

    /// <summary>Adds the pair unless present; returns whether it was added.</summary>
    /// <param name="bits">The linearized set.</param>
    /// <param name="setHash">The Zobrist hash of <paramref name="bits"/>.</param>
    /// <param name="state">The model state.</param>
    public bool Add(ReadOnlySpan<ulong> bits, ulong setHash, int state)
    {
        var hash = Mix(setHash ^ ((ulong)(uint)state * 0x9E3779B97F4A7C15UL));
        var mask = _table.Length - 1;
        var slot = (int)hash & mask;
        var window = Window(bits, out var lo);
        while (_table[slot].Used)
        {
            ref readonly var e = ref _table[slot];
            if (e.Hash == hash && e.State == state && e.Lo == lo && e.Length == window.Length
                && _arena.AsSpan(e.Offset, e.Length).SequenceEqual(window))
            {
                return false;
            }

            slot = (slot + 1) & mask;
        }

        if (_arenaUsed + window.Length > _arena.Length)
        {
            Array.Resize(ref _arena, Math.Max(_arena.Length * 2, _arenaUsed + window.Length));
        }

        window.CopyTo(_arena.AsSpan(_arenaUsed));
        _table[slot] = new Entry(hash, state, lo, _arenaUsed, window.Length + 1);
        _arenaUsed += window.Length;
        if (++_count * 4 > _table.Length * 3)
        {
            Grow();
        }

        return true;
    }

    private static ReadOnlySpan<ulong> Window(ReadOnlySpan<ulong> bits, out int lo)
    {
        lo = 0;
        while (lo < bits.Length && bits[lo] == ulong.MaxValue)
        {
            lo++;
        }

        var hi = bits.Length;
        while (hi > lo && bits[hi - 1] == 0)
        {
            hi--;
        }

        return bits[lo..hi];
    }

    private void Grow()
    {
        var old = _table;
        _table = new Entry[old.Length * 2];
        var mask = _table.Length - 1;
        foreach (var e in old)
        {
            if (!e.Used)
            {
                continue;
            }

            var slot = (int)e.Hash & mask;
            while (_table[slot].Used)
            {
                slot = (slot + 1) & mask;
            }

            _table[slot] = e;
        }
    }

    // Zobrist hashes are uniform already, but the state is folded in linearly; a finalizer spreads both into the
    // low bits the table indexes by.
    private static ulong Mix(ulong x)
    {
        x ^= x >> 33;
        x *= 0xFF51AFD7ED558CCDUL;
        x ^= x >> 33;
        x *= 0xC4CEB9FE1A85EC53UL;
        x ^= x >> 33;
        return x;
    }

    // 24 bytes: the table is the checker's main memory cost. LengthPlusOne is 0 in empty slots.
    private readonly record struct Entry(ulong Hash, int State, int Lo, int Offset, int LengthPlusOne)
    {
        public bool Used => LengthPlusOne != 0;

        public int Length => LengthPlusOne - 1;
    }
}
