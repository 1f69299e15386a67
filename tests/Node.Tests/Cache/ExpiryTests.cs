using System.Buffers;
using Dcache.Cache;
using Dcache.Node.Services;
using Google.Protobuf;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

public sealed class ExpiryTests
{
    [Fact]
    public void Expire_sets_an_absolute_expiry_and_replies_1_or_0_when_absent()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 5_000));
        Assert.Equal(5_000, cache.Pttl("k"));
        Assert.Equal(Int(0), cache.Expire("missing", cache.NowMs + 5_000));
    }

    [Fact]
    public void Expire_in_the_past_deletes_the_key_and_replies_1()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs - 1));
        Assert.Null(cache.Get("k"));
        Assert.Equal(0, cache.Machine.StoredKeyCount);

        cache.Set("k", "v");
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs)); // "now" itself is already expired
        Assert.Equal(0, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void Expire_nx_applies_only_without_ttl()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfNoTtl));
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 9_000, ExpireCondition.IfNoTtl));
        Assert.Equal(5_000, cache.Pttl("k"));
    }

    [Fact]
    public void Expire_xx_applies_only_with_ttl()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfHasTtl));
        Assert.Equal(-1, cache.Pttl("k"));
        cache.Expire("k", cache.NowMs + 5_000);
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 9_000, ExpireCondition.IfHasTtl));
        Assert.Equal(9_000, cache.Pttl("k"));
    }

    [Fact]
    public void Expire_gt_never_applies_to_a_key_without_ttl_and_needs_a_later_time()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfGreater));
        cache.Expire("k", cache.NowMs + 5_000);
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfGreater));
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 4_000, ExpireCondition.IfGreater));
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 6_000, ExpireCondition.IfGreater));
        Assert.Equal(6_000, cache.Pttl("k"));
    }

    [Fact]
    public void Expire_lt_always_applies_to_a_key_without_ttl_and_needs_an_earlier_time()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfLess));
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfLess));
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 6_000, ExpireCondition.IfLess));
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 4_000, ExpireCondition.IfLess));
        Assert.Equal(4_000, cache.Pttl("k"));
    }

    [Fact]
    public void Expire_xx_gt_combines_both_conditions()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs + 5_000, ExpireCondition.IfHasTtl | ExpireCondition.IfGreater));
        cache.Expire("k", cache.NowMs + 5_000);
        Assert.Equal(Int(1), cache.Expire("k", cache.NowMs + 7_000, ExpireCondition.IfHasTtl | ExpireCondition.IfGreater));
    }

    [Fact]
    public void Expire_condition_checks_come_before_the_past_time_delete()
    {
        // As in Redis: NX on a key with TTL replies 0 and keeps the key even when the new time is in the past.
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v", 5_000);
        Assert.Equal(Int(0), cache.Expire("k", cache.NowMs - 100, ExpireCondition.IfNoTtl));
        Assert.Equal("v", cache.Get("k"));
    }

    [Fact]
    public void Persist_removes_a_ttl_and_replies_whether_it_did()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v", 5_000);
        Assert.Equal(Int(1), cache.Persist("k"));
        Assert.Equal(-1, cache.Pttl("k"));
        Assert.Equal(Int(0), cache.Persist("k"));
        Assert.Equal(Int(0), cache.Persist("missing"));
        cache.NowMs += 1_000_000;
        Assert.Equal("v", cache.Get("k"));
    }

    [Fact]
    public void Ttl_and_pttl_report_minus_two_minus_one_or_the_time_left_rounded_as_redis_does()
    {
        var cache = new CacheHarness();
        cache.Set("plain", "v");
        cache.SetExpiringIn("ttl", "v", 10_499);
        var m = cache.Machine;
        var now = cache.NowMs;
        Assert.Equal(-2, m.TimeToLiveMs(Entries.B("missing"), now));
        Assert.Equal(-2, m.TimeToLiveSeconds(Entries.B("missing"), now));
        Assert.Equal(-1, m.TimeToLiveMs(Entries.B("plain"), now));
        Assert.Equal(-1, m.TimeToLiveSeconds(Entries.B("plain"), now));
        Assert.Equal(10_499, m.TimeToLiveMs(Entries.B("ttl"), now));
        Assert.Equal(10, m.TimeToLiveSeconds(Entries.B("ttl"), now));
        Assert.Equal(11, m.TimeToLiveSeconds(Entries.B("ttl"), now - 1)); // 10,500 ms rounds up
        Assert.Equal(0, m.TimeToLiveSeconds(Entries.B("ttl"), now + 10_000)); // 499 ms left rounds to 0
        Assert.Equal(-2, m.TimeToLiveMs(Entries.B("ttl"), now + 10_499));
    }

    [Fact]
    public void Reads_hide_expired_keys_by_the_callers_clock_without_removing_them()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v", 1_000);
        cache.Set("plain", "p");
        var m = cache.Machine;
        Assert.Equal("v", cache.Get("k", cache.NowMs + 999));
        Assert.Null(cache.Get("k", cache.NowMs + 1_000));
        Assert.False(m.ContainsKey(Entries.B("k"), cache.NowMs + 1_000));
        Assert.Equal(CacheReply.FromArray([CacheReply.Nil, Bulk("p")]), m.MultiGet(Entries.Keys("k", "plain"), cache.NowMs + 1_000));
        Assert.Equal(2, m.CountKeys(cache.NowMs + 999));
        Assert.Equal(1, m.CountKeys(cache.NowMs + 1_000));
        Assert.Equal(2, m.StoredKeyCount);
    }

    [Fact]
    public void Writes_treat_keys_expired_by_the_entry_timestamp_as_absent()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("counter", "41", 1_000);
        cache.NowMs += 999;
        Assert.Equal(Int(42), cache.IncrementBy("counter", 1));
        cache.NowMs += 1;
        Assert.Equal(Int(1), cache.IncrementBy("counter", 1));
        Assert.Equal(-1, cache.Pttl("counter"));
    }

    [Fact]
    public void Apply_uses_the_stamped_time_never_the_local_clock()
    {
        // An entry stamped far in the past applies as of then: a key that "now" would be long expired is still live.
        var cache = new CacheHarness { NowMs = 1_000 };
        cache.Set("k", "v", SetOptions.ExpiringAt(2_000));
        cache.NowMs = 1_500;
        Assert.Equal(Bulk("v"), cache.Set("k", "w", new SetOptions(ReturnOldValue: true, Expiry: SetExpiry.KeepTtl)));
        Assert.Equal("w", cache.Get("k", 1_999));
    }

    [Fact]
    public void The_clock_never_goes_back_so_a_slower_new_leader_cannot_revive_expired_keys()
    {
        var cache = new CacheHarness { NowMs = 10_000 };
        cache.Set("k", "v", SetOptions.ExpiringAt(10_500));
        cache.NowMs = 11_000;
        cache.Set("other", "x");
        Assert.Equal(11_000, cache.Machine.ClockMs);

        cache.NowMs = 10_100; // the next leader's clock lags behind
        Assert.Equal(Int(0), cache.Expire("k", 20_000));
        Assert.Equal(11_000, cache.Machine.ClockMs);
    }

    [Fact]
    public void Purge_removes_keys_expired_up_to_the_horizon_and_replies_the_count()
    {
        var cache = new CacheHarness();
        var t = cache.NowMs;
        cache.Set("a", "1", SetOptions.ExpiringAt(t + 100));
        cache.Set("b", "1", SetOptions.ExpiringAt(t + 200));
        cache.Set("c", "1", SetOptions.ExpiringAt(t + 200));
        cache.Set("d", "1", SetOptions.ExpiringAt(t + 300));
        cache.Set("plain", "1");

        cache.NowMs = t + 1_000;
        Assert.Equal(Int(3), cache.Purge(t + 200));
        Assert.Equal(2, cache.Machine.StoredKeyCount);
        Assert.Equal(3, cache.Machine.GetStatistics().ExpiredKeys);
        Assert.Equal(Int(0), cache.Purge(t + 200));
        Assert.Equal(Int(1), cache.Purge(t + 300));
        Assert.Equal(1, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void Purge_never_reaches_past_the_entrys_own_time()
    {
        var cache = new CacheHarness();
        var t = cache.NowMs;
        cache.Set("a", "1", SetOptions.ExpiringAt(t + 100));
        Assert.Equal(Int(0), cache.Purge(t + 1_000));
        Assert.Equal("1", cache.Get("a"));
    }

    [Fact]
    public void A_ttl_changed_before_purge_is_respected()
    {
        var cache = new CacheHarness();
        var t = cache.NowMs;
        cache.Set("a", "1", SetOptions.ExpiringAt(t + 100));
        cache.Expire("a", t + 10_000);
        cache.Set("b", "1", SetOptions.ExpiringAt(t + 100));
        cache.Persist("b");
        cache.NowMs = t + 5_000;
        Assert.Equal(Int(0), cache.Purge(t + 5_000));
        Assert.Equal(2, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void The_latest_expiry_time_redis_accepts_still_counts_as_an_expiry()
    {
        // long.MaxValue is the state machine's "no expiry"; Redis takes PEXPIREAT key 9223372036854775807 (and SET PXAT,
        // GETEX PXAT) as a time, so the key must keep an expiry that PERSIST removes, not silently become persistent.
        var cache = new CacheHarness();
        cache.Set("k", "v");
        var key = ByteString.CopyFromUtf8("k");
        Assert.Equal(Int(1), cache.Apply(Encode(new Protocol.Cache.Command { Expire = new Protocol.Cache.ExpireRequest { Key = key, ExpireAtMs = long.MaxValue } }, cache.NowMs)));
        Assert.Equal(long.MaxValue - 1, cache.Machine.ExpireTimeMs(Entries.B("k"), cache.NowMs));
        // EXPIRETIME in seconds rounds to the nearest, as Redis answers it, without overflowing.
        var expireTime = ReadExecutor.Execute(new Protocol.Cache.Command { Expiretime = new Protocol.Cache.ExpireTimeRequest { Key = key } }, cache.Machine, cache.NowMs);
        Assert.Equal(9223372036854776, expireTime.Integer);
        Assert.Equal(Int(1), cache.Persist("k"));

        Assert.Equal(Replies.Bulk("v"), cache.Apply(Encode(new Protocol.Cache.Command { Getex = new Protocol.Cache.GetExRequest { Key = key, ExpireAtMs = long.MaxValue } }, cache.NowMs)));
        Assert.Equal(long.MaxValue - 1 - cache.NowMs, cache.Pttl("k"));

        cache.Apply(Encode(new Protocol.Cache.Command { Set = new Protocol.Cache.SetRequest { Key = key, Value = key, ExpireAtMs = long.MaxValue } }, cache.NowMs));
        Assert.Equal(long.MaxValue - 1, cache.Machine.ExpireTimeMs(Entries.B("k"), cache.NowMs));

        // A relative time that reaches it on the leader's clock, likewise.
        cache.Apply(Encode(new Protocol.Cache.Command { Expire = new Protocol.Cache.ExpireRequest { Key = key, TtlMs = long.MaxValue - cache.NowMs } }, cache.NowMs));
        Assert.Equal(long.MaxValue - 1, cache.Machine.ExpireTimeMs(Entries.B("k"), cache.NowMs));
    }

    private static byte[] Encode(Protocol.Cache.Command command, long nowMs)
    {
        var buffer = new ArrayBufferWriter<byte>();
        WriteEncoder.Encode(command, nowMs, buffer);
        return buffer.WrittenSpan.ToArray();
    }
}
