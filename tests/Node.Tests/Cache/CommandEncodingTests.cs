using System.Text;
using Dcache.Cache;
using Xunit.Abstractions;

namespace Dcache.Node.Tests.Cache;

public sealed class CommandEncodingTests(ITestOutputHelper output)
{
    private static readonly CommandEnvelope Envelope = new(0xFEDC_BA98_7654_3210, 300, 1_700_000_000_123);

    private static string S(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);

    /// <summary>One valid entry of each kind and option combination, for the round-trip and corruption tests.</summary>
    public static TheoryData<string, byte[]> ValidEntries() => new()
    {
        { "set plain", Entries.Set(Envelope, "key", "value") },
        { "set nx get at", Entries.Set(Envelope, "k", "v", new SetOptions(SetCondition.IfAbsent, true, SetExpiry.At, 1_700_000_060_000)) },
        { "set xx keepttl", Entries.Set(Envelope, "k", "", new SetOptions(SetCondition.IfPresent, Expiry: SetExpiry.KeepTtl)) },
        { "del", Entries.Delete(Envelope, "a", "bb", "") },
        { "expire xx gt", Entries.Expire(Envelope, "k", -5, ExpireCondition.IfHasTtl | ExpireCondition.IfGreater) },
        { "persist", Entries.Persist(Envelope, "k") },
        { "incrby", Entries.IncrementBy(Envelope, "n", long.MinValue) },
        { "mset", Entries.MultiSet(Envelope, "a", "1", "b", "22") },
        { "purge", Entries.PurgeExpired(Envelope, 1_700_000_000_000) },
        { "register session", Entries.RegisterSession(7) },
        { "marked incrby", Entries.IncrementBy(new CommandEnvelope(7, 3, 1_000, SessionMustExist: true), "n", 1) },
        { "getdel", Entries.GetDelete(Envelope, "k") },
        { "getex at", Entries.GetExpire(Envelope, "k", GetExpiry.At, 1_700_000_060_000) },
        { "getex persist", Entries.GetExpire(Envelope, "k", GetExpiry.Persist) },
        { "append", Entries.Append(Envelope, "k", "tail") },
        { "incrbyfloat", Entries.IncrementByFloat(Envelope, "f", "-1.5e3") },
        { "msetnx", Entries.MultiSetIfNoneExist(Envelope, "a", "1", "b", "22") },
        { "flushall", Entries.FlushAll(Envelope) },
        { "rename", Entries.Rename(Envelope, "from", "to") },
        { "renamenx", Entries.Rename(Envelope, "from", "to", ifAbsent: true) },
        { "purge through key", Entries.PurgeExpiredThroughKey(Envelope, 1_700_000_000_000, "session:42"u8) },
        { "setrange", Entries.SetRange(Envelope, "k", 536_870_911, "xyz") },
        { "setrange empty", Entries.SetRange(Envelope, "", 0, "") },
        { "copy", Entries.Copy(Envelope, "from", "to") },
        { "copy replace", Entries.Copy(Envelope, "from", "to", replace: true) },
        { "transaction", Entries.Transaction(Envelope, Entries.Set(Entries.NoSession, "k", "v"), Entries.Read(ReadKind.MultiGet, "k", "l"), Entries.GetRange("k", -3, 7), Entries.Read(ReadKind.KeyCount)) },
    };

    [Fact]
    public void Every_command_round_trips()
    {
        var set = CacheCommand.Decode(Entries.Set(Envelope, "key", "value", new SetOptions(SetCondition.IfAbsent, true, SetExpiry.At, 99)));
        Assert.Equal(CacheCommandKind.Set, set.Kind);
        Assert.Equal(Envelope, set.Envelope);
        Assert.Equal("key", S(set.Key));
        Assert.Equal("value", S(set.Value));
        Assert.Equal(new SetOptions(SetCondition.IfAbsent, true, SetExpiry.At, 99), set.SetOptions);

        var keepTtl = CacheCommand.Decode(Entries.Set(Envelope, "k", "v", new SetOptions(SetCondition.IfPresent, Expiry: SetExpiry.KeepTtl)));
        Assert.Equal(new SetOptions(SetCondition.IfPresent, false, SetExpiry.KeepTtl, 0), keepTtl.SetOptions);

        var del = CacheCommand.Decode(Entries.Delete(Envelope, "a", "bb", ""));
        Assert.Equal(3, del.Count);
        var keys = new List<string>();
        foreach (var key in del.Keys)
        {
            keys.Add(S(key));
        }

        Assert.Equal(["a", "bb", ""], keys);

        var expire = CacheCommand.Decode(Entries.Expire(Envelope, "k", -5, ExpireCondition.IfHasTtl | ExpireCondition.IfLess));
        Assert.Equal((CacheCommandKind.Expire, "k", -5L, ExpireCondition.IfHasTtl | ExpireCondition.IfLess), (expire.Kind, S(expire.Key), expire.ExpireAtMs, expire.ExpireCondition));

        var persist = CacheCommand.Decode(Entries.Persist(Envelope, "p"));
        Assert.Equal((CacheCommandKind.Persist, "p"), (persist.Kind, S(persist.Key)));

        var incr = CacheCommand.Decode(Entries.IncrementBy(Envelope, "n", long.MinValue));
        Assert.Equal((CacheCommandKind.IncrementBy, "n", long.MinValue), (incr.Kind, S(incr.Key), incr.Delta));

        var mset = CacheCommand.Decode(Entries.MultiSet(Envelope, "a", "1", "b", "22"));
        var pairs = new List<(string, string)>();
        foreach (var pair in mset.Pairs)
        {
            pairs.Add((S(pair.Key), S(pair.Value)));
        }

        Assert.Equal([("a", "1"), ("b", "22")], pairs);

        var purge = CacheCommand.Decode(Entries.PurgeExpired(Envelope, 12345));
        Assert.Equal((CacheCommandKind.PurgeExpired, 12345L), (purge.Kind, purge.PurgeUpToMs));
    }

    [Fact]
    public void Format_3_kinds_round_trip()
    {
        var getDel = CacheCommand.Decode(Entries.GetDelete(Envelope, "g"));
        Assert.Equal((CacheCommandKind.GetDelete, "g"), (getDel.Kind, S(getDel.Key)));

        var getExAt = CacheCommand.Decode(Entries.GetExpire(Envelope, "k", GetExpiry.At, 4242));
        Assert.Equal((CacheCommandKind.GetExpire, "k", GetExpiry.At, 4242L), (getExAt.Kind, S(getExAt.Key), getExAt.GetExpiry, getExAt.ExpireAtMs));
        var getExPersist = CacheCommand.Decode(Entries.GetExpire(Envelope, "k", GetExpiry.Persist, 4242));
        Assert.Equal((GetExpiry.Persist, 0L), (getExPersist.GetExpiry, getExPersist.ExpireAtMs));

        var append = CacheCommand.Decode(Entries.Append(Envelope, "k", "tail"));
        Assert.Equal((CacheCommandKind.Append, "k", "tail"), (append.Kind, S(append.Key), S(append.Value)));

        var incr = CacheCommand.Decode(Entries.IncrementByFloat(Envelope, "f", "-1.5e3"));
        Assert.Equal((CacheCommandKind.IncrementByFloat, "f", "-1.5e3"), (incr.Kind, S(incr.Key), S(incr.FloatIncrement)));

        var msetnx = CacheCommand.Decode(Entries.MultiSetIfNoneExist(Envelope, "a", "1"));
        Assert.Equal((CacheCommandKind.MultiSetIfNoneExist, 1), (msetnx.Kind, msetnx.Pairs.Count));

        Assert.Equal(CacheCommandKind.FlushAll, CacheCommand.Decode(Entries.FlushAll(Envelope)).Kind);

        var rename = CacheCommand.Decode(Entries.Rename(Envelope, "from", "to"));
        Assert.Equal((CacheCommandKind.Rename, "from", "to"), (rename.Kind, S(rename.Key), S(rename.Destination)));
        Assert.Equal(CacheCommandKind.RenameIfAbsent, CacheCommand.Decode(Entries.Rename(Envelope, "a", "b", ifAbsent: true)).Kind);
    }

    [Fact]
    public void The_purge_that_stops_at_a_key_round_trips()
    {
        var purge = CacheCommand.Decode(Entries.PurgeExpiredThroughKey(Envelope, -12345, [0, 0xFF, (byte)'k']));
        Assert.Equal((CacheCommandKind.PurgeExpiredThroughKey, -12345L), (purge.Kind, purge.PurgeUpToMs));
        Assert.Equal([0, 0xFF, (byte)'k'], purge.Key.ToArray());
        Assert.Equal(Envelope, purge.Envelope);

        var emptyKey = CacheCommand.Decode(Entries.PurgeExpiredThroughKey(Envelope, 5, []));
        Assert.Equal((CacheCommandKind.PurgeExpiredThroughKey, 5L, 0), (emptyKey.Kind, emptyKey.PurgeUpToMs, emptyKey.Key.Length));
        Assert.Equal(CacheCommand.FormatVersion, Entries.PurgeExpiredThroughKey(Envelope, 5, [])[0]);
    }

    [Fact]
    public void Format_6_kinds_round_trip()
    {
        var setRange = CacheCommand.Decode(Entries.SetRange(Envelope, "k", long.MaxValue, "v"));
        Assert.Equal((CacheCommandKind.SetRange, "k", long.MaxValue, "v"), (setRange.Kind, S(setRange.Key), setRange.Offset, S(setRange.Value)));
        Assert.True(setRange.UsesRedis7StringLimitText);

        var copy = CacheCommand.Decode(Entries.Copy(Envelope, "from", "to"));
        Assert.Equal((CacheCommandKind.Copy, "from", "to", false), (copy.Kind, S(copy.Key), S(copy.Destination), copy.Replace));
        Assert.True(CacheCommand.Decode(Entries.Copy(Envelope, "a", "b", replace: true)).Replace);
        Assert.Equal(0, copy.Offset);
        Assert.Throws<ArgumentOutOfRangeException>(() => Entries.SetRange(Envelope, "k", -1, "v"));

        // The older formats keep their wording of the string limit error (a session's reply is replicated state).
        var append = Entries.Append(Envelope, "k", "v");
        Assert.True(CacheCommand.Decode(append).UsesRedis7StringLimitText);
        CacheCommand.SetFormatVersion(append, CacheCommand.PurgeThroughKeyVersion);
        Assert.False(CacheCommand.Decode(append).UsesRedis7StringLimitText);
    }

    [Fact]
    public void Format_6_malformations_are_named()
    {
        // An offset past long.MaxValue: varint 2^63 (nine 0x80 bytes then 0x01).
        var header = Entries.Copy(Envelope, "", "")[..^3];
        header[1] = (byte)CacheCommandKind.SetRange;
        byte[] hugeOffset = [.. header, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00];
        AssertMalformed(hugeOffset, "SETRANGE offset beyond a signed 64-bit number");

        var badFlags = Entries.Copy(Envelope, "a", "b");
        badFlags[^5] = 0x02;
        AssertMalformed(badFlags, "invalid COPY flags 0x02");
    }

    [Theory]
    [MemberData(nameof(ValidEntries))]
    public void Kinds_exist_only_from_the_format_that_brought_them(string name, byte[] entry)
    {
        var kind = CacheCommand.Decode(entry).Kind;
        var minimum = CacheCommand.MinimumFormatVersion(kind);
        Assert.Equal(kind switch
        {
            >= CacheCommandKind.Transaction => CacheCommand.TransactionVersion,
            >= CacheCommandKind.SetRange => CacheCommand.SetRangeAndCopyVersion,
            CacheCommandKind.PurgeExpiredThroughKey => CacheCommand.PurgeThroughKeyVersion,
            >= CacheCommandKind.RegisterSession => CacheCommand.SessionRegistrationVersion,
            _ => CacheCommand.OldestFormatVersion,
        }, minimum);
        CacheCommand.SetFormatVersion((byte[])entry.Clone(), minimum);
        if (minimum == CacheCommand.OldestFormatVersion)
        {
            return;
        }

        // A leader cannot mark them as an older version, and an older version's decoder does not know them: an older
        // build stops at them rather than skip them.
        Assert.Throws<ArgumentException>(() => CacheCommand.SetFormatVersion((byte[])entry.Clone(), (byte)(minimum - 1)));
        byte[] asOlder = [(byte)(minimum - 1), .. entry[1..]];
        var error = Assert.Throws<FormatException>(() => CacheCommand.Decode(asOlder));
        Assert.Contains("unknown command kind", error.Message, StringComparison.Ordinal);
        Assert.NotNull(name);
    }

    [Fact]
    public void Envelope_extremes_round_trip()
    {
        foreach (var envelope in new[] { new CommandEnvelope(0, 0, 0), new CommandEnvelope(ulong.MaxValue, ulong.MaxValue, long.MinValue), new CommandEnvelope(1, 127, long.MaxValue), new CommandEnvelope(2, 128, -1) })
        {
            Assert.Equal(envelope, CacheCommand.Decode(Entries.Persist(envelope, "k")).Envelope);
        }
    }

    [Fact]
    public void The_encoding_is_compact_and_starts_with_the_version_byte()
    {
        var entry = Entries.Set(new CommandEnvelope(7, 1, 1_700_000_000_000), "key", "value");

        // version 1 + kind 1 + client 8 + sequence 1 + now 8 + flags 1 + key 1+3 + value 1+5
        Assert.Equal(30, entry.Length);
        Assert.Equal(CacheCommand.FormatVersion, entry[0]);
        Assert.Equal((byte)CacheCommandKind.Set, entry[1]);
        Assert.Equal(7, entry[2]); // little-endian client id
    }

    [Theory]
    [MemberData(nameof(ValidEntries))]
    public void Every_truncation_of_a_valid_entry_is_a_format_exception(string name, byte[] entry)
    {
        for (var length = 0; length < entry.Length; length++)
        {
            var error = Assert.Throws<FormatException>(() => CacheCommand.Decode(entry.AsSpan(0, length)));
            Assert.StartsWith("Malformed cache command: ", error.Message, StringComparison.Ordinal);
        }

        Assert.NotNull(name);
    }

    [Theory]
    [MemberData(nameof(ValidEntries))]
    public void Trailing_bytes_are_a_format_exception(string name, byte[] entry)
    {
        var error = Assert.Throws<FormatException>(() => CacheCommand.Decode([.. entry, 0]));
        Assert.Contains("trailing", error.Message, StringComparison.Ordinal);
        Assert.NotNull(name);
    }

    [Fact]
    public void Specific_malformations_are_named()
    {
        var set = Entries.Set(Envelope, "k", "v");
        var headerLength = 1 + 1 + 8 + 2 + 8; // sequence 300 takes two varint bytes

        AssertMalformed([.. set[..1], 99, .. set[2..]], "unknown command kind 99");

        var badFlags = (byte[])set.Clone();
        badFlags[headerLength] = 0x80;
        AssertMalformed(badFlags, "invalid SET flags");

        var badCondition = (byte[])set.Clone();
        badCondition[headerLength] = 3;
        AssertMalformed(badCondition, "invalid SET flags");

        var expire = Entries.Expire(Envelope, "k", 1);
        expire[headerLength] = (byte)(ExpireCondition.IfGreater | ExpireCondition.IfLess);
        AssertMalformed(expire, "invalid EXPIRE condition");
        expire[headerLength] = (byte)(ExpireCondition.IfNoTtl | ExpireCondition.IfHasTtl);
        AssertMalformed(expire, "invalid EXPIRE condition");

        var del = Entries.Delete(Envelope, "a");
        del[headerLength] = 0;
        AssertMalformed(del, "DEL key count is zero");
        del[headerLength] = 100;
        AssertMalformed(del, "DEL key count 100 exceeds");

        var persist = Entries.Persist(Envelope, "k");
        AssertMalformed([.. persist[..headerLength], 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], "varint overflows");
        AssertMalformed([.. persist[..headerLength], 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], "varint overflows");

        var getEx = Entries.GetExpire(Envelope, "k", GetExpiry.Persist);
        getEx[headerLength] = 0;
        AssertMalformed(getEx, "invalid GETEX expiry 0");
        getEx[headerLength] = 3;
        AssertMalformed(getEx, "invalid GETEX expiry 3");

        var version = Assert.Throws<UnsupportedCommandVersionException>(() => CacheCommand.Decode([CacheCommand.FormatVersion + 1, .. set[1..]]));
        Assert.Equal(CacheCommand.FormatVersion + 1, version.Version);
        Assert.Throws<UnsupportedCommandVersionException>(() => CacheCommand.Decode([0, .. set[1..]]));
        Assert.IsAssignableFrom<FormatException>(version);
    }

    [Fact]
    public void Encoders_refuse_what_no_proposer_should_send()
    {
        var sink = new System.Buffers.ArrayBufferWriter<byte>();
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeDelete(sink, Envelope, []));
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeMultiSet(sink, Envelope, Entries.Keys("a")));
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeExpire(sink, Envelope, "k"u8, 1, ExpireCondition.IfNoTtl | ExpireCondition.IfGreater));
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeSet(sink, Envelope, "k"u8, "v"u8, new SetOptions((SetCondition)3)));
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeGetExpire(sink, Envelope, "k"u8, (GetExpiry)0));
        Assert.Throws<ArgumentException>(() => CacheCommand.EncodeMultiSet(sink, Envelope, Entries.Keys("a"), ifNoneExist: true));
        Assert.Equal(0, sink.WrittenCount);
    }

    [Fact]
    public void Random_and_mutated_bytes_never_fail_other_than_with_format_exception()
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_FUZZ_SEED") is { } text ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay with DCACHE_FUZZ_SEED={seed})");
        var random = new Random(seed);
        var valid = ValidEntries().Select(row => (byte[])row[1]).ToArray();
        var decoded = 0;
        var machine = new CacheStateMachine(new CacheStateMachineOptions { MemoryCapBytes = 10_000 });
        ulong index = 0;

        for (var i = 0; i < 30_000; i++)
        {
            byte[] input;
            if (i % 3 == 0)
            {
                input = new byte[random.Next(0, 64)];
                random.NextBytes(input);
                if (input.Length > 0 && random.Next(2) == 0)
                {
                    input[0] = CacheCommand.FormatVersion;
                }
            }
            else
            {
                input = (byte[])valid[random.Next(valid.Length)].Clone();
                var mutations = random.Next(1, 4);
                for (var m = 0; m < mutations; m++)
                {
                    input[random.Next(1, input.Length)] = (byte)random.Next(256);
                }

                if (random.Next(4) == 0)
                {
                    input = input[..random.Next(input.Length)];
                }
            }

            try
            {
                CacheCommand.Decode(input);
                decoded++;
            }
            catch (FormatException)
            {
            }

            // Whatever the bytes, apply must not throw (except for a foreign version, which random bytes rarely are).
            if (input.Length == 0 || input[0] is >= CacheCommand.OldestFormatVersion and <= CacheCommand.FormatVersion)
            {
                machine.Apply(++index, input);
            }
        }

        output.WriteLine($"{decoded} of 30000 inputs decoded as valid commands");
    }

    private static void AssertMalformed(byte[] entry, string expected)
    {
        var error = Assert.Throws<FormatException>(() => CacheCommand.Decode(entry));
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }
}
