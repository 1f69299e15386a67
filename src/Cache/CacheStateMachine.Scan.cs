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
    private long _scanIndexGeneration;

    /// <summary>
    /// The most keys one SCAN call visits, whatever its COUNT: COUNT is a hint (Redis returns fewer too), and a page is
    /// read in one go on the thread that applies writes, so an unbounded COUNT would hold it as long as KEYS once did.
    /// A constant, not a setting, so that replicas at the same applied index give the same page for the same call, up to
    /// the work bound of <see cref="ScanIndex.ReadPage"/>: removed keys a replica's index still holds count towards it,
    /// so such a replica may end a page earlier. Where pages end never affects SCAN's guarantee.
    /// </summary>
    public const int MaxScanCount = 8192;

    /// <summary>
    /// SCAN cursor: the keys from position <paramref name="cursor"/> on in SCAN order (a fixed hash of the key, the same on
    /// every replica), about <paramref name="count"/> at a time, without the ones expired at <paramref name="nowMs"/> or
    /// refused by <paramref name="filter"/>. The page's next cursor is where the following call continues; 0 ends the
    /// iteration. Every key stored from a cursor-0 call to the end is returned, once or more, whichever replicas serve
    /// the calls. Costs O(r log n + count r) for the index's r sorted runs (r &lt;= log2(n) + 1), plus placing the keys
    /// created since the last SCAN (amortised O(log n) each); the first SCAN, and one after many keys were created or
    /// removed since the last, builds the index in O(n log n). All of that happens in this call: a caller that must
    /// not be held that long uses <see cref="PrepareScan"/>, <see cref="TryScan"/> and <see cref="ScanWork"/>.
    /// </summary>
    public ScanPage Scan(ulong cursor, int count, long nowMs, KeyFilter? filter = null)
    {
        var ticket = PrepareScan();
        ScanPage page;
        while (!TryScan(ticket, cursor, count, nowMs, filter, out page))
        {
            ScanWork(int.MaxValue);
        }

        while (ScanWork(int.MaxValue))
        {
            // Merges too, as a call always did: the next call then starts from as few runs as can be.
        }

        return page;
    }

    /// <summary>
    /// Notes a SCAN call arriving now. It may be answered (<see cref="TryScan"/>) once the index holds every key stored
    /// now; keys created later may or may not be in its page, as SCAN allows. Must run on the thread that applies writes.
    /// </summary>
    public ScanTicket PrepareScan()
    {
        lock (_scanGate)
        {
            return new ScanTicket(_scanIndexGeneration, _scanIndex?.ReadMark ?? 0);
        }
    }

    /// <summary>
    /// The page for a call prepared with <paramref name="ticket"/> (see <see cref="Scan"/>), or false when the index must
    /// first place keys: then <see cref="ScanWork"/> does that a slice at a time, and this is tried again. Starts building
    /// the index when there is none. Must run on the thread that applies writes.
    /// </summary>
    public bool TryScan(ScanTicket ticket, ulong cursor, int count, long nowMs, KeyFilter? filter, out ScanPage page)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        page = new ScanPage(0, []);
        if (cursor > long.MaxValue)
        {
            // Past every position (no SCAN reply gives such a cursor): nothing is left to visit.
            return true;
        }

        lock (_scanGate)
        {
            var index = _scanIndex;
            if (index is null)
            {
                // Every key stored now, which includes every key stored when the call arrived and still there.
                index = _scanIndex = ScanIndex.Begin(BeginWalk(), EndObserving);
                _scanIndexGeneration++;
            }

            // An index begun after the call arrived holds every key stored then (and still there) once built.
            var mark = ticket.Generation == _scanIndexGeneration ? ticket.Mark : 0;
            if (!index.IsCurrentFor(mark))
            {
                index.RequestCatchUp(mark);
                return false;
            }

            page = index.ReadPage((long)cursor, Math.Min(count, MaxScanCount), nowMs, filter);
            return true;
        }
    }

    /// <summary>
    /// Does a slice of the SCAN index's pending work: places at most <paramref name="maxKeys"/> keys (building it, or
    /// catching up with keys a call waits for) and merges at most <see cref="ScanIndex.MergeSlotsPerKey"/> times as many
    /// slots. True while work remains. Must run on the thread that applies writes, between writes.
    /// </summary>
    public bool ScanWork(int maxKeys)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxKeys, 1);
        lock (_scanGate)
        {
            return _scanIndex?.Work(maxKeys) ?? false;
        }
    }

    /// <summary>True while SCAN's index has keys to place or runs to merge (<see cref="ScanWork"/>).</summary>
    public bool ScanHasWork
    {
        get
        {
            lock (_scanGate)
            {
                return _scanIndex?.HasWork ?? false;
            }
        }
    }

    /// <summary>Slots in SCAN's index runs (0 without an index): what tests see of its progress.</summary>
    internal long ScanIndexSlots => _scanIndex?.Slots ?? 0;

    /// <summary>SCAN's index runs (0 without an index).</summary>
    internal int ScanIndexRuns => _scanIndex?.RunCount ?? 0;

    private void DropScanIndex()
    {
        _scanIndex?.Abandon();
        _scanIndex = null;
    }

    /// <summary>Keeps SCAN's index, when there is one, up to date with a key just created.</summary>
    private void NoteCreatedForScan(CacheEntry entry)
    {
        if (_scanIndex is not null && !_scanIndex.NoteCreated(entry))
        {
            DropScanIndex();
        }
    }

    /// <summary>Keeps SCAN's index, when there is one, up to date with a key just removed.</summary>
    private void NoteRemovedForScan(CacheEntry entry)
    {
        if (_scanIndex is not null && !_scanIndex.NoteRemoved(entry, _usedBytes))
        {
            DropScanIndex();
        }
    }
}

/// <summary>A SCAN call's place in line: which index it arrived under, and how many keys that index had been told of.</summary>
public readonly record struct ScanTicket(long Generation, long Mark);

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
