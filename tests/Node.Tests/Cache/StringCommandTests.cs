using System.Text;
using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>The string and key commands beyond the first set: their reads, and the format-3 write kinds as they apply.</summary>
public sealed class StringCommandTests
{
    private static readonly CacheReply Empty = CacheReply.FromBulk([]);

    [Theory]
    [InlineData(0, 3, "This")]
    [InlineData(-3, -1, "ing")]
    [InlineData(0, -1, "This is a string")]
    [InlineData(10, 100, "string")]
    [InlineData(-100, 3, "This")]
    [InlineData(-1, -5, "")]
    [InlineData(5, 3, "")]
    [InlineData(100, 200, "")]
    [InlineData(long.MinValue, long.MaxValue, "This is a string")]
    public void Getrange_clamps_as_redis_does(long start, long end, string expected)
    {
        var cache = new CacheHarness();
        cache.Set("k", "This is a string");
        Assert.Equal(Bulk(expected), cache.Machine.GetRange(Entries.B("k"), start, end, cache.NowMs));
    }

    [Fact]
    public void Reads_of_absent_or_expired_keys_answer_as_redis_does()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("gone", "value", 10);
        cache.Set("empty", "");
        var later = cache.NowMs + 10;
        Assert.Equal(Empty, cache.Machine.GetRange(Entries.B("gone"), 0, -1, later));
        Assert.Equal(Empty, cache.Machine.GetRange(Entries.B("empty"), 0, -1, later));
        Assert.Equal(0, cache.Machine.StringLength(Entries.B("gone"), later));
        Assert.Equal(5, cache.Machine.StringLength(Entries.B("gone"), cache.NowMs));
        Assert.Equal(-2, cache.Machine.ExpireTimeMs(Entries.B("gone"), later));
        Assert.Equal(cache.NowMs + 10, cache.Machine.ExpireTimeMs(Entries.B("gone"), cache.NowMs));
        Assert.Equal(-1, cache.Machine.ExpireTimeMs(Entries.B("empty"), later));
    }

    [Fact]
    public void Keys_lists_live_keys_in_write_order_through_the_filter()
    {
        var cache = new CacheHarness();
        cache.Set("b", "1");
        cache.SetExpiringIn("short", "1", 10);
        cache.Set("a", "1");
        cache.Set("b", "2");
        Assert.Equal(Array(Bulk("short"), Bulk("a"), Bulk("b")), cache.Machine.Keys(cache.NowMs));
        Assert.Equal(Array(Bulk("a"), Bulk("b")), cache.Machine.Keys(cache.NowMs + 10));
        Assert.Equal(Array(Bulk("short")), cache.Machine.Keys(cache.NowMs, key => key.Length > 1));
        Assert.Equal(Array(), new CacheHarness().Machine.Keys(0));
    }

    [Fact]
    public void Getdel_returns_the_value_and_removes_the_key()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Bulk("v"), cache.Apply(Entries.GetDelete(cache.Envelope(), "k")));
        Assert.Null(cache.Get("k"));
        Assert.Equal(CacheReply.Nil, cache.Apply(Entries.GetDelete(cache.Envelope(), "k")));
        Assert.Equal(0, cache.Machine.UsedBytes);
    }

    [Fact]
    public void Getex_sets_or_removes_the_expiry_and_returns_the_value()
    {
        var cache = new CacheHarness();
        cache.Set("k", "v");
        Assert.Equal(Bulk("v"), cache.Apply(Entries.GetExpire(cache.Envelope(), "k", GetExpiry.At, cache.NowMs + 5_000)));
        Assert.Equal(5_000, cache.Pttl("k"));
        Assert.Equal(Bulk("v"), cache.Apply(Entries.GetExpire(cache.Envelope(), "k", GetExpiry.Persist)));
        Assert.Equal(-1, cache.Pttl("k"));
        Assert.Equal(Bulk("v"), cache.Apply(Entries.GetExpire(cache.Envelope(), "k", GetExpiry.Persist)));

        // A time already past: the value comes back and the key is gone, as in Redis.
        Assert.Equal(Bulk("v"), cache.Apply(Entries.GetExpire(cache.Envelope(), "k", GetExpiry.At, cache.NowMs)));
        Assert.Null(cache.Get("k"));
        Assert.Equal(CacheReply.Nil, cache.Apply(Entries.GetExpire(cache.Envelope(), "k", GetExpiry.Persist)));
    }

    [Fact]
    public void Append_creates_or_extends_and_keeps_the_ttl()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(5), cache.Apply(Entries.Append(cache.Envelope(), "k", "Hello")));
        cache.Expire("k", cache.NowMs + 7_000);
        Assert.Equal(Int(11), cache.Apply(Entries.Append(cache.Envelope(), "k", " World")));
        Assert.Equal("Hello World", cache.Get("k"));
        Assert.Equal(7_000, cache.Pttl("k"));
        Assert.Equal(Int(11), cache.Apply(Entries.Append(cache.Envelope(), "k", "")));
        Assert.Equal(CacheEntry.ChargeFor(1, 11), cache.Machine.UsedBytes);
    }

    [Fact]
    public void Append_beyond_the_memory_cap_is_refused_and_changes_nothing()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 200 });
        cache.Set("k", new string('a', 50));
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.Apply(Entries.Append(cache.Envelope(), "k", new string('b', 10))));
        Assert.Equal(50, cache.Get("k")!.Length);
    }

    [Theory]
    [InlineData("10.50", "0.1", "10.6")]
    [InlineData("10.6", "-5", "5.6")]
    [InlineData("5.0e3", "2.0e2", "5200")]
    [InlineData("0.1", "0.2", "0.3")]
    [InlineData("3", "-3", "0")]
    [InlineData("-0.5", "0.25", "-0.25")]
    [InlineData("1", "1e-20", "1")]
    [InlineData("+.5", "5.", "5.5")]
    [InlineData("1.5e-10", "0", "0.00000000015")]
    [InlineData("1e20", "0.1", "100000000000000000000")]
    [InlineData("123456789012345678901", "0", "123456789012345680000")]
    [InlineData("0.123456789012345678", "1", "1.1234567890123457")]
    [InlineData("0.000000000000000005", "0", "0")]
    [InlineData("Infinity", "-1", null)]
    [InlineData("1e308", "1e308", null)]
    [InlineData("inf", "1", null)]
    [InlineData("1", "-INFINITY", null)]
    [InlineData("1e4000", "1", null)] // a long double holds it, a double does not: the documented difference
    [InlineData("2", "1e-400", "2")]
    [InlineData("2", "0e-99999", "2")]
    public void Incrbyfloat_adds_and_formats_as_redis_does(string stored, string increment, string? expected)
    {
        var cache = new CacheHarness();
        cache.Set("f", stored);
        var reply = cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "f", increment));
        Assert.Equal(expected is null ? Error(CacheErrors.FloatOverflow) : Bulk(expected), reply);
        Assert.Equal(expected ?? stored, cache.Get("f"));
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("NaN")]
    [InlineData("1,5")]
    [InlineData("0x")]
    public void Incrbyfloat_refuses_values_and_increments_that_are_not_floats(string text)
    {
        var cache = new CacheHarness();
        cache.Set("f", text);
        Assert.Equal(Error(CacheErrors.NotAFloat), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "f", "1")));
        Assert.Equal(Error(CacheErrors.NotAFloat), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "g", text)));
        Assert.False(CacheCommand.IsValidFloat(Entries.B(text)));
        Assert.Null(cache.Get("g"));
    }

    [Theory]
    [InlineData("1e5000")] // beyond a long double: strtold overflows, string2ld refuses it
    [InlineData("-2E4933")]
    [InlineData("1e34611686018427387904")]
    [InlineData("1e-5000")] // rounds to zero in a long double: strtold underflows, string2ld refuses it
    [InlineData("0.0001e-4947")]
    [InlineData("-999\0")] // .NET's parsers stop at trailing NULs; string2ld requires every byte to be part of the number
    [InlineData("1.5\0\0")]
    public void Incrbyfloat_increments_redis_refuses_are_refused_before_they_enter_the_log(string text) =>
        Assert.False(CacheCommand.IsValidFloat(Entries.B(text)));

    [Theory]
    [InlineData("-999\0", "-997.5")]
    [InlineData("1e-5000", "1.5")]
    public void Incrbyfloat_reads_a_stored_value_as_every_earlier_build_does(string stored, string expected)
    {
        // Redis refuses these stored values; a replica must apply an entry as every build of its cluster does, so the
        // difference stays (docs/protocol.md): an upgraded replica reading them differently would diverge from the rest.
        var cache = new CacheHarness();
        cache.Set("f", stored);
        Assert.Equal(Bulk(expected), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "f", "1.5")));
    }

    [Fact]
    public void Incrbyfloat_starts_from_zero_and_keeps_the_ttl()
    {
        var cache = new CacheHarness();
        Assert.Equal(Bulk("2.5"), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "f", "2.5")));
        cache.Expire("f", cache.NowMs + 3_000);
        Assert.Equal(Bulk("3"), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "f", "0.5")));
        Assert.Equal(3_000, cache.Pttl("f"));

        // Beyond System.Decimal's range the sum is a double, still written out in full.
        cache.Set("big", "1e300");
        Assert.Equal(Bulk("2" + new string('0', 300)), cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "big", "1e300")));
    }

    [Theory]
    [InlineData(1.5e-10, "0.00000000015")]
    [InlineData(1e-20, "0")]
    [InlineData(-1e-20, "0")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(1e21, "1000000000000000000000")]
    [InlineData(0.1 + 0.2, "0.30000000000000004")]
    [InlineData(0.0123456789012345678, "0.01234567890123457")]
    [InlineData(0.99999999999999999999, "1")]
    [InlineData(9.999999999999999e-18, "0.00000000000000001")]
    public void Doubles_are_written_without_exponent_and_with_at_most_17_decimals(double value, string expected) =>
        Assert.Equal(expected, FloatFormat.Format(value));

    [Fact]
    public void Msetnx_sets_every_pair_or_none()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(1), cache.Apply(Entries.MultiSetIfNoneExist(cache.Envelope(), "a", "1", "b", "2")));
        Assert.Equal(("1", "2"), (cache.Get("a"), cache.Get("b")));
        Assert.Equal(Int(0), cache.Apply(Entries.MultiSetIfNoneExist(cache.Envelope(), "c", "3", "b", "9")));
        Assert.Equal(((string?)null, "2"), (cache.Get("c"), cache.Get("b")));

        // An expired key does not count as existing.
        cache.SetExpiringIn("e", "old", 10);
        cache.NowMs += 10;
        Assert.Equal(Int(1), cache.Apply(Entries.MultiSetIfNoneExist(cache.Envelope(), "e", "new")));
        Assert.Equal(-1, cache.Pttl("e"));
    }

    [Fact]
    public void Flushall_drops_every_key_and_keeps_the_sessions()
    {
        const ulong client = 0xF1;
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 10_000 });
        var write = Entries.Set(cache.Envelope(client, 1), "s", "v");
        Assert.Equal(CacheReply.Ok, cache.Apply(write));
        cache.SetExpiringIn("t", "v", 1_000);
        cache.Set("u", "v");
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.FlushAll(cache.Envelope())));
        Assert.Equal(0, cache.Machine.CountKeys(cache.NowMs));
        Assert.Equal(0, cache.Machine.UsedBytes);
        Assert.Equal(0, cache.Machine.GetStatistics().KeysWithExpiry);
        Assert.Equal(Array(), cache.Machine.Keys(cache.NowMs));

        // The session remembers its write: a retry does not apply it again.
        Assert.Equal(1, cache.Machine.SessionCount);
        Assert.Equal(CacheReply.Ok, cache.Apply(write));
        Assert.Null(cache.Get("s"));

        // The emptied state works as a new one, write order and expiry index included.
        cache.SetExpiringIn("t", "v", 1_000);
        cache.Set("w", "v");
        Assert.Equal(Array(Bulk("t"), Bulk("w")), cache.Machine.Keys(cache.NowMs));
        cache.NowMs += 1_000;
        Assert.Equal(Int(1), cache.Purge(cache.NowMs));
    }

    [Fact]
    public void Rename_moves_the_value_and_its_expiry_and_replaces_the_destination()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("from", "v", 5_000);
        cache.Set("to", "old value");
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.Rename(cache.Envelope(), "from", "to")));
        Assert.Null(cache.Get("from"));
        Assert.Equal("v", cache.Get("to"));
        Assert.Equal(5_000, cache.Pttl("to"));
        Assert.Equal(CacheEntry.ChargeFor(2, 1), cache.Machine.UsedBytes);
        Assert.Equal(Error(CacheErrors.NoSuchKey), cache.Apply(Entries.Rename(cache.Envelope(), "from", "to")));
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.Rename(cache.Envelope(), "to", "to")));
        Assert.Equal("v", cache.Get("to"));
    }

    [Fact]
    public void Renamenx_renames_only_to_a_free_name()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        cache.Set("b", "2");
        Assert.Equal(Int(0), cache.Apply(Entries.Rename(cache.Envelope(), "a", "b", ifAbsent: true)));
        Assert.Equal(("1", "2"), (cache.Get("a"), cache.Get("b")));
        Assert.Equal(Int(0), cache.Apply(Entries.Rename(cache.Envelope(), "a", "a", ifAbsent: true)));
        Assert.Equal(Int(1), cache.Apply(Entries.Rename(cache.Envelope(), "a", "c", ifAbsent: true)));
        Assert.Equal(((string?)null, "1"), (cache.Get("a"), cache.Get("c")));
        Assert.Equal(Error(CacheErrors.NoSuchKey), cache.Apply(Entries.Rename(cache.Envelope(), "a", "d", ifAbsent: true)));
    }

    [Fact]
    public void Setrange_overwrites_pads_with_zero_bytes_and_keeps_the_ttl()
    {
        var cache = new CacheHarness();
        cache.Set("k", "Hello World");
        cache.Expire("k", cache.NowMs + 9_000);
        Assert.Equal(Int(11), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 6, "Redis")));
        Assert.Equal("Hello Redis", cache.Get("k"));
        Assert.Equal(Int(11), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 13, "")));
        Assert.Equal(Int(15), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 13, "!?")));
        Assert.Equal("Hello Redis\0\0!?", cache.Get("k"));
        Assert.Equal(9_000, cache.Pttl("k"));
        Assert.Equal(Int(5), cache.Apply(Entries.SetRange(cache.Envelope(), "new", 3, "ab")));
        Assert.Equal("\0\0\0ab", cache.Get("new"));
        Assert.Equal(-1, cache.Pttl("new"));
        Assert.Equal(CacheEntry.ChargeFor(1, 15) + CacheEntry.ChargeFor(3, 5), cache.Machine.UsedBytes);
    }

    [Fact]
    public void Setrange_with_an_empty_value_answers_the_length_and_creates_nothing()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(0), cache.Apply(Entries.SetRange(cache.Envelope(), "missing", 0, "")));
        Assert.Equal(Int(0), cache.Apply(Entries.SetRange(cache.Envelope(), "missing", long.MaxValue, "")));
        Assert.Equal(0, cache.Machine.StoredKeyCount);
        cache.Set("k", "abc");
        var used = cache.Machine.UsedBytes;
        Assert.Equal(Int(3), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 100, "")));
        Assert.Equal(("abc", used), (cache.Get("k"), cache.Machine.UsedBytes));
    }

    [Theory]
    [InlineData(536_870_911, 1, false)] // exactly 512 MiB: allowed, as in Redis
    [InlineData(536_870_911, 2, true)]
    [InlineData(536_870_912, 1, true)]
    [InlineData(long.MaxValue, 1, true)] // offset + length overflows a signed number: still too long
    public void Setrange_past_512_MiB_is_refused_in_redis_words(long offset, int length, bool refused)
    {
        if (!refused)
        {
            // Allocates the 512 MiB value: only the limit's edge case is run for real.
            var edge = new CacheHarness();
            Assert.Equal(Int(offset + length), edge.Apply(Entries.SetRange(edge.Envelope(), "k", offset, new string('x', length))));
            return;
        }

        var cache = new CacheHarness();
        cache.Set("k", "abc");
        Assert.Equal(Error(CacheErrors.StringTooLong), cache.Apply(Entries.SetRange(cache.Envelope(), "k", offset, new string('x', length))));
        Assert.Equal(Error(CacheErrors.StringTooLong), cache.Apply(Entries.SetRange(cache.Envelope(), "missing", offset, new string('x', length))));
        Assert.Equal("abc", cache.Get("k"));
        Assert.Equal(1, cache.Machine.StoredKeyCount);
        Assert.Equal("ERR string exceeds maximum allowed size (proto-max-bulk-len)", CacheErrors.StringTooLong);
    }

    [Fact]
    public void The_string_limit_error_keeps_its_old_words_in_entries_of_older_formats()
    {
        var cache = new CacheHarness();
        cache.Apply(Entries.SetRange(cache.Envelope(), "k", 536_870_911, "x"));
        Assert.Equal(Error(CacheErrors.StringTooLong), cache.Apply(Entries.Append(cache.Envelope(), "k", "y")));
        var asFormat5 = Entries.Append(cache.Envelope(), "k", "y");
        CacheCommand.SetFormatVersion(asFormat5, CacheCommand.PurgeThroughKeyVersion);
        Assert.Equal(Error(CacheErrors.StringTooLongBeforeFormat6), cache.Apply(asFormat5));
    }

    [Fact]
    public void Setrange_beyond_the_memory_cap_is_refused_and_changes_nothing()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 200 });
        cache.Set("k", "abc");
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 59, "x")));
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.Apply(Entries.SetRange(cache.Envelope(), "other", 1_000, "x")));
        Assert.Equal("abc", cache.Get("k"));
        Assert.Equal(Int(59), cache.Apply(Entries.SetRange(cache.Envelope(), "k", 58, "x")));
    }

    [Fact]
    public void Copy_copies_the_value_and_the_ttl_and_replaces_only_when_asked()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(0), cache.Apply(Entries.Copy(cache.Envelope(), "missing", "to")));
        Assert.Equal(0, cache.Machine.StoredKeyCount);

        cache.Set("from", "v1");
        cache.Expire("from", cache.NowMs + 5_000);
        Assert.Equal(Int(1), cache.Apply(Entries.Copy(cache.Envelope(), "from", "to")));
        Assert.Equal(("v1", "v1"), (cache.Get("from"), cache.Get("to")));
        Assert.Equal(5_000, cache.Pttl("to"));

        cache.Set("other", "v2");
        Assert.Equal(Int(0), cache.Apply(Entries.Copy(cache.Envelope(), "other", "to")));
        Assert.Equal("v1", cache.Get("to"));
        Assert.Equal(Int(1), cache.Apply(Entries.Copy(cache.Envelope(), "other", "to", replace: true)));
        Assert.Equal("v2", cache.Get("to"));
        Assert.Equal(-1, cache.Pttl("to"));

        // The copy is the newest write; the source is not written.
        Assert.Equal(Array(Bulk("from"), Bulk("other"), Bulk("to")), cache.Machine.Keys(cache.NowMs));
        Assert.Equal(CacheEntry.ChargeFor(4, 2) + CacheEntry.ChargeFor(5, 2) + CacheEntry.ChargeFor(2, 2), cache.Machine.UsedBytes);

        // A value changed later changes one key only.
        cache.Apply(Entries.Append(cache.Envelope(), "to", "+"));
        Assert.Equal(("v2", "v2+"), (cache.Get("other"), cache.Get("to")));
    }

    [Fact]
    public void Copy_onto_itself_is_an_error_even_for_a_missing_key()
    {
        var cache = new CacheHarness();
        Assert.Equal(Error(CacheErrors.SameObject), cache.Apply(Entries.Copy(cache.Envelope(), "k", "k")));
        cache.Set("k", "v");
        Assert.Equal(Error(CacheErrors.SameObject), cache.Apply(Entries.Copy(cache.Envelope(), "k", "k", replace: true)));
        Assert.Equal("ERR source and destination objects are the same", CacheErrors.SameObject);
    }

    [Fact]
    public void Copy_of_an_expired_key_copies_nothing_and_removes_it()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("from", "v", 10);
        cache.Set("to", "old");
        cache.NowMs += 10;
        Assert.Equal(Int(0), cache.Apply(Entries.Copy(cache.Envelope(), "from", "to", replace: true)));
        Assert.Equal("old", cache.Get("to"));
        Assert.Equal(1, cache.Machine.StoredKeyCount);
    }

    [Fact]
    public void Copy_beyond_the_memory_cap_is_refused_and_changes_nothing()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 200 });
        cache.Set("k", new string('a', 50));
        Assert.Equal(Error(CacheErrors.OutOfMemory), cache.Apply(Entries.Copy(cache.Envelope(), "k", new string('d', 11))));
        Assert.Equal(1, cache.Machine.StoredKeyCount);

        // One that fits alone is a write like any: the oldest key is evicted to make room.
        Assert.Equal(Int(1), cache.Apply(Entries.Copy(cache.Envelope(), "k", "copy")));
        Assert.Equal((null, 50), (cache.Get("k"), cache.Get("copy")!.Length));
    }

    [Fact]
    public void Randomkey_answers_live_keys_only_and_nil_without_one()
    {
        var cache = new CacheHarness();
        var random = new Random(7);
        Assert.Equal(CacheReply.Nil, cache.Machine.RandomKey(cache.NowMs, random));

        cache.Set("a", "1");
        cache.Set("b", "2");
        var seen = new HashSet<string>();
        for (var i = 0; i < 200; i++)
        {
            seen.Add(Encoding.UTF8.GetString(cache.Machine.RandomKey(cache.NowMs, random).Bulk.Span));
        }

        Assert.Equal(["a", "b"], seen.Order());

        // Many keys expired and not yet purged, a single live one: it is still found, every time.
        for (var i = 0; i < 1_000; i++)
        {
            cache.SetExpiringIn($"gone{i}", "x", 5);
        }

        cache.SetExpiringIn("late", "x", 50);
        cache.Delete("a", "b");
        var expiredBy = cache.NowMs + 5;
        for (var i = 0; i < 100; i++)
        {
            Assert.Equal(Bulk("late"), cache.Machine.RandomKey(expiredBy, random));
        }

        // The live key has no expiry now: found through the keys without one.
        cache.Persist("late");
        for (var i = 0; i < 100; i++)
        {
            Assert.Equal(Bulk("late"), cache.Machine.RandomKey(expiredBy, random));
        }

        cache.Delete("late");
        Assert.Equal(CacheReply.Nil, cache.Machine.RandomKey(expiredBy, random));
        Assert.Equal(Bulk("gone0").Kind, cache.Machine.RandomKey(cache.NowMs, random).Kind);
    }

    [Fact]
    public void Randomkey_follows_flushall_and_snapshot_loads()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        cache.SetExpiringIn("b", "2", 1_000);
        var snapshot = new MemoryStream();
        cache.Machine.WriteSnapshot(snapshot);
        cache.Apply(Entries.FlushAll(cache.Envelope()));
        Assert.Equal(CacheReply.Nil, cache.Machine.RandomKey(cache.NowMs, new Random(1)));

        snapshot.Position = 0;
        cache.Machine.LoadSnapshot(snapshot);
        cache.Delete("a");
        Assert.Equal(Bulk("b"), cache.Machine.RandomKey(cache.NowMs, new Random(1)));
        cache.Persist("b");
        cache.Delete("b");
        Assert.Equal(CacheReply.Nil, cache.Machine.RandomKey(cache.NowMs, new Random(1)));
    }

    [Fact]
    public void Replicas_applying_the_new_kinds_agree_byte_for_byte()
    {
        var first = new CacheHarness();
        var second = new CacheHarness();
        foreach (var cache in new[] { first, second })
        {
            cache.Set("a", "1.5");
            cache.Apply(Entries.IncrementByFloat(cache.Envelope(), "a", "0.1"));
            cache.Apply(Entries.Append(cache.Envelope(), "a", "9"));
            cache.Apply(Entries.MultiSetIfNoneExist(cache.Envelope(), "b", "x", "c", "y"));
            cache.Apply(Entries.Rename(cache.Envelope(), "b", "d"));
            cache.Apply(Entries.GetExpire(cache.Envelope(), "d", GetExpiry.At, cache.NowMs + 100));
            cache.Apply(Entries.GetDelete(cache.Envelope(), "c"));
            cache.Apply(Entries.SetRange(cache.Envelope(), "d", 3, "zz"));
            cache.Apply(Entries.Copy(cache.Envelope(), "d", "e"));
            cache.Apply(Entries.Copy(cache.Envelope(), "a", "e", replace: true));
        }

        Assert.Equal("1.69", first.Get("a"));
        Assert.Equal(first.Machine.Digest(), second.Machine.Digest());
    }

    private static CacheReply Array(params CacheReply[] items) => CacheReply.FromArray(items);
}
