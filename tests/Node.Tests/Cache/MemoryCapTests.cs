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

    [Theory]
    [InlineData(4)]
    [InlineData(CacheCommand.FormatVersion)]
    public void Over_the_cap_a_format_5_write_reclaims_only_the_expired_keys_it_needs_room_for_the_same_ones_everywhere(byte version)
    {
        // 1,000 keys of one expiry time, written in random order and some rewritten (so that the order they were given
        // their expiry and their write order differ), fill most of the cap; a replica loaded from a snapshot holds them too.
        var random = new Random(7);
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 200_000 });
        var t = cache.NowMs + 100;
        var names = Enumerable.Range(0, 1_000).Select(i => "wave:" + i.ToString("D4", System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        foreach (var name in names.OrderBy(_ => random.Next()))
        {
            cache.Set(name, "0123456789", SetOptions.ExpiringAt(t));
        }

        foreach (var name in names.OrderBy(_ => random.Next()).Take(500))
        {
            cache.Set(name, "9876543210", new SetOptions(Expiry: SetExpiry.KeepTtl));
        }

        const long PerWaveKey = 9 + 10 + CacheEntry.OverheadBytes;
        Assert.Equal(1_000 * PerWaveKey, cache.Machine.UsedBytes);
        var loaded = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(cache.Machine)), cache.Machine.Options);

        // After the wave expired, a 50,000-byte value takes usage 9,143 bytes over the cap: 58 expired keys' worth.
        cache.NowMs = t + 1;
        var write = Entries.Set(cache.Envelope(), "big", new string('x', 50_000));
        CacheCommand.SetFormatVersion(write, version);
        var index = cache.Machine.AppliedIndex + 1;
        Assert.Equal(CacheReply.Ok, cache.Machine.Apply(index, write));
        Assert.Equal(CacheReply.Ok, loaded.Apply(index, write));
        Assert.True(cache.Machine.Digest() == loaded.Digest(), "the replicas reclaimed different keys");
        var stats = cache.Machine.GetStatistics();
        Assert.Equal(0, stats.EvictedKeys);
        if (version < CacheCommand.PurgeThroughKeyVersion)
        {
            // Format 4 and older: every expired key at once, as always.
            Assert.Equal((1_000L, 1), (stats.ExpiredKeys, cache.Machine.StoredKeyCount));
        }
        else
        {
            Assert.Equal((58L, 1_000 - 58 + 1), (stats.ExpiredKeys, cache.Machine.StoredKeyCount));
            Assert.True(cache.Machine.UsedBytes is <= 200_000 and > 200_000 - PerWaveKey, $"{cache.Machine.UsedBytes} bytes used");

            // The soonest to expire, keys of one expiry by their bytes: wave:0000 to wave:0057.
            Assert.Null(cache.Get("wave:0057", t - 1));
            Assert.NotNull(cache.Get("wave:0058", t - 1));
        }
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

    private static byte[] Snapshot(CacheStateMachine machine)
    {
        using var stream = new MemoryStream();
        machine.WriteSnapshot(stream);
        return stream.ToArray();
    }
}
