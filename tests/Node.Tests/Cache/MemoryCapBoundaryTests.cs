using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

/// <summary>The memory cap's edges: usage exactly at the cap is under it, for what is reclaimed and for what is refused.</summary>
public sealed class MemoryCapBoundaryTests
{
    private const long PerKey = 1 + 1 + CacheEntry.OverheadBytes;

    [Fact]
    public void A_format_4_write_that_brings_usage_exactly_to_the_cap_reclaims_no_expired_key()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 3 * PerKey });
        cache.SetExpiringIn("e", "1", 1);
        cache.Set("a", "1");
        cache.NowMs += 10;

        // Format 4 purges every expired key once usage is over the cap; exactly at the cap it is not over.
        var write = Entries.Set(cache.Envelope(), "b", "1");
        CacheCommand.SetFormatVersion(write, CacheCommand.PurgeThroughKeyVersion - 1);
        Assert.Equal(CacheReply.Ok, cache.Apply(write));

        Assert.Equal(3 * PerKey, cache.Machine.UsedBytes);
        Assert.Equal(3, cache.Machine.StoredKeyCount);
        Assert.Equal(0, cache.Machine.GetStatistics().ExpiredKeys);
    }

    [Fact]
    public void A_value_whose_charge_is_exactly_the_cap_is_stored()
    {
        var cap = 1 + 10 + CacheEntry.OverheadBytes;
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = cap });
        Assert.Equal(CacheReply.Ok, cache.Set("k", "0123456789"));
        Assert.Equal("0123456789", cache.Get("k"));
        Assert.Equal(cap, cache.Machine.UsedBytes);

        // One byte more is refused, and the key keeps its value.
        Assert.Equal(CacheReply.FromError(CacheErrors.OutOfMemory), cache.Set("k", "0123456789x"));
        Assert.Equal("0123456789", cache.Get("k"));
    }
}
