namespace Dcache.Storage;

/// <summary>
/// Where FasterLog puts an address on disk. FasterLog's managed device stores segment <c>n</c> (addresses
/// [n &lt;&lt; SegmentSizeBits, (n+1) &lt;&lt; SegmentSizeBits)) in the file <c>{BaseName}.{n}</c>; an entry is a 4-byte
/// length followed by the entry, padded to 4 bytes, and never crosses a page (the unused end of a page is zeros).
/// This layer reads those files itself to replay, verify, and serve old entries, so the mapping lives here, once.
/// </summary>
internal sealed record LogGeometry(string Directory, string BaseName, int PageSizeBits, int SegmentSizeBits)
{
    /// <summary>FasterLog's first valid address (FASTER reserves the first 64 bytes of the address space).</summary>
    public const long FirstValidAddress = 64;

    /// <summary>FasterLog's per-entry header: a 4-byte little-endian length.</summary>
    public const int EntryHeaderSize = 4;

    public long PageSize => 1L << PageSizeBits;

    public long SegmentSize => 1L << SegmentSizeBits;

    public string BasePath => Path.Combine(Directory, BaseName);

    public int SegmentOf(long address) => (int)(address >> SegmentSizeBits);

    public long FileOffsetOf(long address) => address & (SegmentSize - 1);

    public long PageStartOf(long address) => address & ~(PageSize - 1);

    public string SegmentPath(int segment) => $"{BasePath}.{segment}";

    /// <summary>Bytes an entry of <paramref name="length"/> occupies in the log, header and padding included.</summary>
    public static int AllocatedLength(int length) => EntryHeaderSize + ((length + 3) & ~3);

    public string Describe(long address) => $"{SegmentPath(SegmentOf(address))}";
}
