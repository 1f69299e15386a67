using System.Text;
using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

public sealed class SetCommandTests
{
    [Fact]
    public void Set_stores_and_overwrites()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Ok, cache.Set("k", "v1"));
        Assert.Equal(CacheReply.Ok, cache.Set("k", "v2"));
        Assert.Equal("v2", cache.Get("k"));
        Assert.Equal(1, cache.Machine.CountKeys(cache.NowMs));
    }

    [Fact]
    public void Empty_key_and_empty_value_are_legal()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Ok, cache.Set("", ""));
        Assert.Equal("", cache.Get(""));
    }

    [Fact]
    public void Set_nx_on_existing_key_does_nothing_and_replies_nil()
    {
        var cache = new CacheHarness();
        cache.Set("k", "old");
        Assert.Equal(CacheReply.Nil, cache.Set("k", "new", new SetOptions(SetCondition.IfAbsent)));
        Assert.Equal("old", cache.Get("k"));
    }

    [Fact]
    public void Set_nx_on_absent_key_sets()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Ok, cache.Set("k", "v", new SetOptions(SetCondition.IfAbsent)));
        Assert.Equal("v", cache.Get("k"));
    }

    [Fact]
    public void Set_xx_on_absent_key_does_nothing_and_replies_nil()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Nil, cache.Set("k", "v", new SetOptions(SetCondition.IfPresent)));
        Assert.Null(cache.Get("k"));
    }

    [Fact]
    public void Set_xx_on_existing_key_sets()
    {
        var cache = new CacheHarness();
        cache.Set("k", "old");
        Assert.Equal(CacheReply.Ok, cache.Set("k", "new", new SetOptions(SetCondition.IfPresent)));
        Assert.Equal("new", cache.Get("k"));
    }

    [Fact]
    public void Set_get_returns_the_old_value_or_nil()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Nil, cache.Set("k", "v1", new SetOptions(ReturnOldValue: true)));
        Assert.Equal(Bulk("v1"), cache.Set("k", "v2", new SetOptions(ReturnOldValue: true)));
        Assert.Equal("v2", cache.Get("k"));
    }

    [Fact]
    public void Set_nx_get_on_existing_key_returns_current_value_without_setting()
    {
        // Redis 7 allows NX with GET: the reply is the current value, and nothing is written.
        var cache = new CacheHarness();
        cache.Set("k", "old");
        Assert.Equal(Bulk("old"), cache.Set("k", "new", new SetOptions(SetCondition.IfAbsent, ReturnOldValue: true)));
        Assert.Equal("old", cache.Get("k"));
    }

    [Fact]
    public void Set_xx_get_on_absent_key_returns_nil_without_setting()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Nil, cache.Set("k", "v", new SetOptions(SetCondition.IfPresent, ReturnOldValue: true)));
        Assert.Null(cache.Get("k"));
    }

    [Fact]
    public void Set_with_expiry_sets_ttl_and_plain_set_clears_it()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v", 10_000);
        Assert.Equal(10_000, cache.Pttl("k"));
        cache.Set("k", "v2");
        Assert.Equal(-1, cache.Pttl("k"));
        Assert.Equal(0, cache.Machine.GetStatistics().KeysWithExpiry);
    }

    [Fact]
    public void Set_keepttl_keeps_the_existing_ttl()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v1", 10_000);
        cache.NowMs += 4_000;
        Assert.Equal(CacheReply.Ok, cache.Set("k", "v2", new SetOptions(Expiry: SetExpiry.KeepTtl)));
        Assert.Equal("v2", cache.Get("k"));
        Assert.Equal(6_000, cache.Pttl("k"));
    }

    [Fact]
    public void Set_keepttl_on_absent_key_sets_without_ttl()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v", new SetOptions(Expiry: SetExpiry.KeepTtl));
        Assert.Equal(-1, cache.Pttl("k"));
    }

    [Fact]
    public void Set_with_expiry_time_in_the_past_leaves_the_key_absent()
    {
        var cache = new CacheHarness();
        cache.Set("k", "old");
        Assert.Equal(Bulk("old"), cache.Set("k", "new", SetOptions.ExpiringAt(cache.NowMs) with { ReturnOldValue = true }));
        Assert.Null(cache.Get("k"));
        Assert.Equal(0, cache.Machine.StoredKeyCount);
        Assert.Equal(CacheReply.Ok, cache.Set("other", "v", SetOptions.ExpiringAt(cache.NowMs - 1)));
        Assert.Equal(0, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void Set_nx_treats_an_expired_key_as_absent()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "old", 100);
        cache.NowMs += 100;
        Assert.Equal(CacheReply.Ok, cache.Set("k", "new", new SetOptions(SetCondition.IfAbsent)));
        Assert.Equal("new", cache.Get("k"));
        Assert.Equal(-1, cache.Pttl("k"));
    }

    [Fact]
    public void Set_get_on_expired_key_returns_nil()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "old", 100);
        cache.NowMs += 150;
        Assert.Equal(CacheReply.Nil, cache.Set("k", "new", new SetOptions(ReturnOldValue: true)));
    }

    [Fact]
    public void Binary_keys_and_values_round_trip()
    {
        var cache = new CacheHarness();
        byte[] key = [0, 255, 13, 10, 0];
        byte[] value = [1, 2, 3, 0, 0, 0];
        cache.Apply(Entries.Encode(w => CacheCommand.EncodeSet(w, cache.Envelope(), key, value)));
        Assert.True(cache.Machine.TryGet(key, cache.NowMs, out var stored));
        Assert.Equal(value, stored.ToArray());
        Assert.False(cache.Machine.TryGet(key.AsSpan(0, 4), cache.NowMs, out _));
    }

    [Fact]
    public void Delete_counts_the_keys_it_removed()
    {
        var cache = new CacheHarness();
        cache.MultiSet("a", "1", "b", "2", "c", "3");
        Assert.Equal(Int(2), cache.Delete("a", "b", "a", "missing"));
        Assert.Null(cache.Get("a"));
        Assert.Equal("3", cache.Get("c"));
        Assert.Equal(Int(0), cache.Delete("a"));
    }

    [Fact]
    public void Delete_does_not_count_an_expired_key_but_reclaims_it()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "v", 10);
        cache.NowMs += 10;
        Assert.Equal(Int(0), cache.Delete("k"));
        Assert.Equal(0, cache.Machine.StoredKeyCount);
        Assert.Equal(1, cache.Machine.GetStatistics().ExpiredKeys);
    }

    [Fact]
    public void MultiSet_sets_every_pair_later_pairs_winning_and_clears_ttls()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("a", "old", 10_000);
        Assert.Equal(CacheReply.Ok, cache.MultiSet("a", "1", "b", "2", "a", "3"));
        Assert.Equal("3", cache.Get("a"));
        Assert.Equal("2", cache.Get("b"));
        Assert.Equal(-1, cache.Pttl("a"));
        Assert.Equal(2, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void Reads_get_mget_exists_dbsize()
    {
        var cache = new CacheHarness();
        cache.MultiSet("a", "1", "b", "2");
        var now = cache.NowMs;
        Assert.Equal(Bulk("1"), cache.Machine.Get(Entries.B("a"), now));
        Assert.Equal(CacheReply.Nil, cache.Machine.Get(Entries.B("zz"), now));
        Assert.Equal(CacheReply.FromArray([Bulk("1"), CacheReply.Nil, Bulk("2")]), cache.Machine.MultiGet(Entries.Keys("a", "zz", "b"), now));
        Assert.Equal(3, cache.Machine.CountExisting(Entries.Keys("a", "a", "b", "zz"), now));
        Assert.True(cache.Machine.ContainsKey(Entries.B("b"), now));
        Assert.Equal(2, cache.Machine.CountKeys(now));
    }

    [Fact]
    public void Reads_count_hits_and_misses_without_changing_replicated_state()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        var digest = cache.Machine.Digest();
        cache.Get("a");
        cache.Get("missing");
        cache.Machine.MultiGet(Entries.Keys("a", "missing", "a"), cache.NowMs);
        var stats = cache.Machine.GetStatistics();
        Assert.Equal(3, stats.Hits);
        Assert.Equal(2, stats.Misses);
        Assert.Equal(digest, cache.Machine.Digest());
    }

    [Fact]
    public void Empty_entry_is_the_leaders_noop_and_only_advances_the_index()
    {
        var machine = new CacheStateMachine();
        Assert.Equal(CacheReply.Ok, machine.Apply(1, ReadOnlySpan<byte>.Empty));
        machine.SkipEntry(2);
        Assert.Equal(2UL, machine.AppliedIndex);
        Assert.Equal(0, machine.StoredKeyCount);
    }

    [Fact]
    public void Applying_an_index_twice_backwards_or_past_a_gap_is_refused()
    {
        var machine = new CacheStateMachine();
        Assert.Throws<InvalidOperationException>(() => machine.Apply(2, Entries.Set(Entries.NoSession, "k", "v")));
        machine.Apply(1, Entries.Set(Entries.NoSession, "k", "v"));
        machine.SkipEntry(2);
        Assert.Throws<InvalidOperationException>(() => machine.Apply(2, Entries.Set(Entries.NoSession, "k", "v")));
        Assert.Throws<InvalidOperationException>(() => machine.SkipEntry(1));
        Assert.Throws<InvalidOperationException>(() => machine.Apply(4, Entries.Set(Entries.NoSession, "k", "w")));
        Assert.Throws<InvalidOperationException>(() => machine.SkipEntry(4));
        Assert.Equal(2UL, machine.AppliedIndex);
        Assert.Equal("v", Encoding.UTF8.GetString(machine.Get("k"u8, 0).Bulk.Span));
    }

    [Fact]
    public void Malformed_entry_replies_an_error_changes_nothing_but_advances_the_index()
    {
        var machine = new CacheStateMachine();
        var skipped = new CacheStateMachine();
        machine.Apply(1, Entries.Set(Entries.NoSession, "k", "v"));
        skipped.Apply(1, Entries.Set(Entries.NoSession, "k", "v"));

        var entry = Entries.Set(Entries.NoSession, "k", "other");
        var reply = machine.Apply(2, entry.AsSpan(0, entry.Length - 1));
        skipped.SkipEntry(2);

        Assert.True(reply.IsError);
        Assert.StartsWith(CacheErrors.MalformedEntryPrefix, reply.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(2UL, machine.AppliedIndex);
        Assert.Equal(1, machine.GetStatistics().MalformedEntries);
        Assert.Equal(skipped.Digest(), machine.Digest());
    }

    [Fact]
    public void Entry_in_an_unknown_format_version_stops_apply_without_advancing()
    {
        var machine = new CacheStateMachine();
        var entry = Entries.Set(Entries.NoSession, "k", "v");
        entry[0] = CacheCommand.FormatVersion + 1;
        var error = Assert.Throws<UnsupportedCommandVersionException>(() => machine.Apply(1, entry));
        Assert.Contains($"version {CacheCommand.FormatVersion + 1}", error.Message, StringComparison.Ordinal);
        Assert.Equal(0UL, machine.AppliedIndex);
    }
}
