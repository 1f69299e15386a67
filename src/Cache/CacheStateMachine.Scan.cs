using System.Globalization;
using System.Text;

namespace Dcache.Cache;

/// <summary>
/// SCAN: the keyspace a page at a time, in <see cref="ScanOrder"/>, through a local index (<see cref="ScanIndex"/>) that
/// writes keep up to date for O(1) each and the first SCAN builds.
/// </summary>
public sealed partial class CacheStateMachine
{
    // Reads may run concurrently, and SCAN is the one read that changes local state (the index catching up).
    private readonly Lock _scanGate = new();
    private ScanIndex? _scanIndex;

    /// <summary>
    /// SCAN cursor: the keys from position <paramref name="cursor"/> on in SCAN order (a fixed hash of the key, the same on
    /// every replica), about <paramref name="count"/> at a time, without the ones expired at <paramref name="nowMs"/> or
    /// refused by <paramref name="filter"/>. The page's next cursor is where the following call continues; 0 ends the
    /// iteration. Every key stored from a cursor-0 call to the end is returned, once or more, whichever replicas serve
    /// the calls. Costs O(r log n + count r) for the index's r sorted runs (r &lt;= log2(n) + 1), plus placing the keys
    /// created since the last SCAN (amortised O(log n) each); the first SCAN, and one after many keys were created or
    /// removed since the last, builds the index in O(n log n).
    /// </summary>
    public ScanPage Scan(ulong cursor, int count, long nowMs, KeyFilter? filter = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        if (cursor > long.MaxValue)
        {
            // Past every position (no SCAN reply gives such a cursor): nothing is left to visit.
            return new ScanPage(0, []);
        }

        lock (_scanGate)
        {
            var index = _scanIndex ??= ScanIndex.Build(_oldestWritten, _entries.Count);
            index.CatchUp();
            return index.ReadPage((long)cursor, count, nowMs, filter);
        }
    }

    /// <summary>Keeps SCAN's index, when there is one, up to date with a key just created.</summary>
    private void NoteCreatedForScan(CacheEntry entry)
    {
        if (_scanIndex is not null && !_scanIndex.NoteCreated(entry))
        {
            _scanIndex = null;
        }
    }

    /// <summary>Keeps SCAN's index, when there is one, up to date with a key just removed.</summary>
    private void NoteRemovedForScan(CacheEntry entry)
    {
        if (_scanIndex is not null && !_scanIndex.NoteRemoved(entry, _usedBytes))
        {
            _scanIndex = null;
        }
    }
}

/// <summary>One SCAN reply: where the next call continues (0: the iteration is over) and this page's keys.</summary>
/// <remarks>The keys' bytes are shared with the store; they are never mutated.</remarks>
public readonly record struct ScanPage(ulong NextCursor, IReadOnlyList<CacheReply> Keys)
{
    /// <summary>SCAN's reply: an array of the cursor (a bulk string of its decimal digits, as Redis sends it) and the keys.</summary>
    public CacheReply ToReply() => CacheReply.FromArray(
    [
        CacheReply.FromBulk(Encoding.ASCII.GetBytes(NextCursor.ToString(CultureInfo.InvariantCulture))),
        CacheReply.FromArray([.. Keys]),
    ]);
}
