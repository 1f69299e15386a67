using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

public sealed class MemoryCapTests
{
    // Each "kN" -> 8-byte value is charged 2 + 8 + overhead.
    private static readonly long PerKey = 2 + 8 + CacheEntry.OverheadBytes;

    private static CacheHarness WithRoomFor(int keys) => new(new CacheStateMachineOptions { MemoryCapBytes = (PerKey * keys) + (PerKey / 2) });

    [Fact]
    public void Usage_is_key_plus_value_plus_fixed_overhead()
    {
        var cache = new CacheHarness();
        cache.Set("k1", "12345678");
        Assert.Equal(PerKey, cache.Machine.UsedBytes);
        cache.Set("k1", "1234");
        Assert.Equal(PerKey - 4, cache.Machine.UsedBytes);
        cache.Delete("k1");
        Assert.Equal(0, cache.Machine.UsedBytes);
    }

    [Fact]
    public void Over_the_cap_the_least_recently_written_keys_are_evicted_first()
    {
        var cache = WithRoomFor(3);
        cache.Set("k1", "11111111");
        cache.Set("k2", "22222222");
        cache.Set("k3", "33333333");
        cache.Set("k1", "1111111X"); // rewriting k1 makes k2 the oldest write

        // Reads never change the order: a replica's local reads must not influence what it evicts.
        Assert.Equal("22222222", cache.Get("k2"));

        cache.Set("k4", "44444444");
        Assert.Null(cache.Get("k2"));
        Assert.NotNull(cache.Get("k1"));
        Assert.NotNull(cache.Get("k3"));
        Assert.NotNull(cache.Get("k4"));
        Assert.Equal(1, cache.Machine.GetStatistics().EvictedKeys);
        Assert.True(cache.Machine.UsedBytes <= cache.Machine.Options.MemoryCapBytes);
    }

    [Fact]
    public void Ttl_changes_and_increments_count_as_writes()
    {
        var cache = WithRoomFor(3);
        cache.Set("k1", "11111111");
        cache.Set("k2", "22222222");
        cache.Set("k3", "1");
        cache.Expire("k1", cache.NowMs + 100_000); // k1 is now the newest write, k2 the oldest
        cache.Set("k4", "44444444");
        Assert.Null(cache.Get("k2"));
        cache.IncrementBy("k3", 1); // k3 newest; k1 oldest
        cache.Set("k5", "55555555");
        Assert.Null(cache.Get("k1"));
        Assert.Equal("2", cache.Get("k3"));
    }

    [Fact]
    public void Expired_keys_are_reclaimed_before_any_live_key_is_evicted()
    {
        var cache = WithRoomFor(3);
        cache.Set("k1", "11111111");
        cache.Set("k2", "22222222", SetOptions.ExpiringAt(cache.NowMs + 10));
        cache.Set("k3", "33333333");
        cache.NowMs += 10;
        cache.Set("k4", "44444444");
        Assert.Equal("11111111", cache.Get("k1"));
        var stats = cache.Machine.GetStatistics();
        Assert.Equal(0, stats.EvictedKeys);
        Assert.Equal(1, stats.ExpiredKeys);
    }

    [Fact]
    public void A_single_value_larger_than_the_cap_is_refused_with_redis_oom_error()
    {
        var cache = WithRoomFor(2);
        cache.Set("k1", "11111111");
        var huge = new string('x', (int)(PerKey * 3));
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.Set("k2", huge));
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.MultiSet("k2", huge));
        Assert.Equal("11111111", cache.Get("k1"));
        Assert.Equal(0, cache.Machine.GetStatistics().EvictedKeys);
    }

    [Fact]
    public void Mset_fitting_the_cap_evicts_older_keys_but_never_its_own()
    {
        var cache = WithRoomFor(3);
        cache.Set("k1", "11111111");
        cache.Set("k2", "22222222");
        Assert.Equal(CacheReply.Ok, cache.MultiSet("k3", "33333333", "k4", "44444444", "k5", "55555555"));
        Assert.Null(cache.Get("k1"));
        Assert.Null(cache.Get("k2"));
        Assert.Equal(3, cache.Machine.StoredKeyCount);
        Assert.Equal(2, cache.Machine.GetStatistics().EvictedKeys);
    }

    [Fact]
    public void Growing_a_value_in_place_can_evict_others()
    {
        var cache = WithRoomFor(3);
        cache.Set("k1", "11111111");
        cache.Set("k2", "22222222");
        cache.Set("k3", "33333333");
        cache.Set("k3", new string('3', 8 + (int)PerKey));
        Assert.Null(cache.Get("k1"));
        Assert.NotNull(cache.Get("k2"));
        Assert.True(cache.Machine.UsedBytes <= cache.Machine.Options.MemoryCapBytes);
    }
}
