namespace Dcache.Cache;

/// <summary>
/// The keys in two arrays with O(1) insertion, removal and access by position, so that RANDOMKEY picks a key in O(1)
/// (a dictionary offers no access by position, and a walk would cost O(n)): the keys without an expiry, which are alive
/// whatever the time, and those with one, which may have expired and not yet been purged. Local bookkeeping kept by every
/// write that adds or removes a key or gives it an expiry or takes it away: it never decides anything replicated.
/// </summary>
internal sealed class RandomKeySample
{
    private readonly List<CacheEntry> _persistent = [];
    private readonly List<CacheEntry> _volatile = [];

    public int PersistentCount => _persistent.Count;

    public int VolatileCount => _volatile.Count;

    public int Count => _persistent.Count + _volatile.Count;

    /// <summary>The key at <paramref name="position"/> (0 to <see cref="Count"/> - 1): the keys without expiry first.</summary>
    public CacheEntry this[int position] => position < _persistent.Count ? _persistent[position] : _volatile[position - _persistent.Count];

    public void Add(CacheEntry entry) => Insert(entry.HasExpiry ? _volatile : _persistent, entry);

    public void Remove(CacheEntry entry) => Delete(entry.HasExpiry ? _volatile : _persistent, entry);

    /// <summary>Moves a key whose expiry was given or taken away (<paramref name="hadExpiry"/>: before the change).</summary>
    public void ExpiryChanged(CacheEntry entry, bool hadExpiry)
    {
        Delete(hadExpiry ? _volatile : _persistent, entry);
        Insert(entry.HasExpiry ? _volatile : _persistent, entry);
    }

    private static void Insert(List<CacheEntry> list, CacheEntry entry)
    {
        entry.RandomSlot = list.Count;
        list.Add(entry);
    }

    /// <summary>Swaps the last key into the removed key's slot: O(1), and the order is of no importance.</summary>
    private static void Delete(List<CacheEntry> list, CacheEntry entry)
    {
        var slot = entry.RandomSlot;
        if ((uint)slot >= (uint)list.Count || !ReferenceEquals(list[slot], entry))
        {
            throw new InvalidOperationException("RANDOMKEY's sample lost track of a key.");
        }

        var last = list[^1];
        list[slot] = last;
        last.RandomSlot = slot;
        list.RemoveAt(list.Count - 1);
    }
}
