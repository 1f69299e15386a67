using System.Globalization;
using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// Purges that stop inside a millisecond of expiry (format 5): a wave of keys given one expiry time is removed a bounded
/// bite per entry, and every replica removes the same keys for the same entry whatever its history.
/// </summary>
public sealed class PurgeWaveTests
{
    // The leader's bound (RaftDriver.MaxKeysPerPurge).
    private const int MaxKeysPerPurge = 16_384;

    [Fact]
    public void A_wave_of_keys_expiring_in_one_millisecond_is_purged_in_entries_of_at_most_the_bound()
    {
        const int Keys = 100_000;
        var cache = new CacheHarness();
        var expireAt = cache.NowMs + 1_000;
        for (var i = 0; i < Keys; i++)
        {
            cache.Set("session:" + i.ToString(CultureInfo.InvariantCulture), "v", SetOptions.ExpiringAt(expireAt));
        }

        cache.NowMs = expireAt + 1;
        var removed = new List<long>();
        var firstCut = cache.Machine.FindPurgeCut(cache.NowMs, MaxKeysPerPurge);
        while (cache.Machine.HasExpiredKeys(cache.NowMs) && removed.Count < 20)
        {
            // What the leader proposes: a purge that stops at a key while more than the bound has expired, else one to now.
            var reply = cache.Machine.FindPurgeCut(cache.NowMs, MaxKeysPerPurge) is { } cut
                ? cache.Apply(Entries.PurgeExpiredThroughKey(cache.Envelope(), cut.ExpireAtMs, cut.LastKey.Span))
                : cache.Purge(cache.NowMs);
            removed.Add(reply.Integer);
        }

        Assert.Equal([.. Enumerable.Repeat((long)MaxKeysPerPurge, 6), Keys - (6 * MaxKeysPerPurge)], removed);
        Assert.Equal(0, cache.Machine.StoredKeyCount);

        // The first entry took the 16,384 keys that come first by their bytes, the last of them included.
        var byBytes = Enumerable.Range(0, Keys).Select(i => Entries.B("session:" + i.ToString(CultureInfo.InvariantCulture))).Order(ByteOrder.Instance).ToArray();
        Assert.NotNull(firstCut);
        Assert.Equal(expireAt, firstCut.Value.ExpireAtMs);
        Assert.Equal(byBytes[MaxKeysPerPurge - 1], firstCut.Value.LastKey.ToArray());
    }

    [Fact]
    public void A_purge_that_stops_at_a_key_removes_the_keys_before_it_in_expiry_then_byte_order_and_it()
    {
        var cache = new CacheHarness();
        var t = cache.NowMs + 100;
        cache.Set("z", "1", SetOptions.ExpiringAt(t - 1));
        cache.Set("b", "1", SetOptions.ExpiringAt(t));
        cache.Set("a", "1", SetOptions.ExpiringAt(t));
        cache.Set("ba", "1", SetOptions.ExpiringAt(t));
        cache.Set("c", "1", SetOptions.ExpiringAt(t));
        cache.Set("\u00e9", "1", SetOptions.ExpiringAt(t)); // 0xC3 0xA9: after every ASCII byte
        cache.Set("a", "1", SetOptions.ExpiringAt(t + 1));
        cache.Set("plain", "1");
        cache.NowMs = t + 10;

        Assert.Equal(Int(2), cache.PurgeThrough(t, "b")); // z (an earlier millisecond), then b; a moved on to t + 1
        Assert.Equal(["a", "ba", "c", "plain", "\u00e9"], Stored(cache));
        Assert.Equal(Int(0), cache.PurgeThrough(t, "b"));
        Assert.Equal(Int(1), cache.PurgeThrough(t, "bb")); // a key the cut names need not exist
        Assert.Equal(Int(2), cache.PurgeThrough(t, "\u00e9\u00e9"));
        Assert.Equal(["a", "plain"], Stored(cache));
        Assert.Equal(Int(0), cache.PurgeThrough(t + 1, "")); // "a" sorts after the empty key
        Assert.Equal(Int(1), cache.PurgeThrough(t + 1, "a"));
        Assert.Equal(["plain"], Stored(cache));
        Assert.Equal(6, cache.Machine.GetStatistics().ExpiredKeys);

        // Never past the entry's own time: a horizon ahead of it purges whole milliseconds up to it, no further.
        cache.Set("d", "1", SetOptions.ExpiringAt(cache.NowMs + 5));
        cache.Set("e", "1", SetOptions.ExpiringAt(cache.NowMs + 50));
        cache.NowMs += 10;
        Assert.Equal(Int(1), cache.PurgeThrough(cache.NowMs + 100, "zzz"));
        Assert.Equal(["e", "plain"], Stored(cache));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(CacheCommand.FormatVersion)]
    public void A_whole_millisecond_purge_of_any_format_still_removes_every_key_of_its_last_millisecond(byte version)
    {
        var cache = new CacheHarness();
        var t = cache.NowMs + 100;
        for (var i = 0; i < 20; i++)
        {
            cache.Set("k" + i.ToString("D2", CultureInfo.InvariantCulture), "v", SetOptions.ExpiringAt(t));
        }

        for (var i = 0; i < 5; i++)
        {
            cache.Set("later" + i.ToString(CultureInfo.InvariantCulture), "v", SetOptions.ExpiringAt(t + 1));
        }

        cache.NowMs = t + 10;

        // A leader whose members include an older build proposes the horizon of the 10th key: its whole millisecond goes.
        var horizon = cache.Machine.PurgeHorizon(cache.NowMs, 10);
        Assert.Equal(t, horizon);
        var purge = Entries.PurgeExpired(cache.Envelope(), horizon);
        CacheCommand.SetFormatVersion(purge, version);
        Assert.Equal(Int(20), cache.Apply(purge));
        Assert.Equal(5, cache.Machine.StoredKeyCount);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Replicas_with_different_histories_purge_the_same_keys_for_the_same_entry(int seed)
    {
        // Replica "applied" applies every entry; "loaded" is built from its snapshot at the end, "caught up" from a
        // snapshot taken half-way and the entries after it. Their expiry indexes were built in different orders: the
        // keys written in one order, then rewritten (write order changes, expiry not) and given their expiry again in
        // others, so that any tie order that depends on history differs between them.
        var random = new Random(seed);
        var nowMs = 1_700_000_000_000;
        var t = nowMs + 60_000;
        var names = Enumerable.Range(0, 3_000).Select(_ => "user:" + random.Next(1_000_000_000).ToString("x", CultureInfo.InvariantCulture)).Distinct().ToArray();
        var envelope = new CommandEnvelope(CommandEnvelope.NoSession, 0, nowMs);
        var log = new List<byte[]>();
        foreach (var name in names.OrderBy(_ => random.Next()))
        {
            log.Add(Entries.Set(envelope, name, "v", SetOptions.ExpiringAt(t + random.Next(-1, 2))));
        }

        foreach (var name in names.OrderBy(_ => random.Next()).Take(names.Length / 2))
        {
            log.Add(random.Next(2) == 0
                ? Entries.Set(envelope, name, "rewritten", new SetOptions(Expiry: SetExpiry.KeepTtl))
                : Entries.Persist(envelope, name));
        }

        var halfWay = log.Count;

        foreach (var name in names.OrderBy(_ => random.Next()))
        {
            log.Add(Entries.Expire(envelope, name, t, ExpireCondition.IfNoTtl));
        }

        var applied = new CacheStateMachine();
        byte[]? snapshotHalfWay = null;
        for (var i = 0; i < log.Count; i++)
        {
            applied.Apply((ulong)i + 1, log[i]);
            if (i + 1 == halfWay)
            {
                snapshotHalfWay = Snapshot(applied);
            }
        }

        var loaded = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(applied)));
        var caughtUp = CacheStateMachine.FromSnapshot(new MemoryStream(snapshotHalfWay!));
        for (var i = halfWay; i < log.Count; i++)
        {
            caughtUp.Apply((ulong)i + 1, log[i]);
        }

        var replicas = new[] { applied, loaded, caughtUp };
        Assert.All(replicas, replica => Assert.Equal(applied.Digest(), replica.Digest()));

        // Purges of at most 97 keys each, as whichever replica leads would propose them.
        var purgeAt = t + 5;
        var purges = 0;
        while (applied.HasExpiredKeys(purgeAt))
        {
            Assert.True(purges++ < 100, $"seed {seed}: the purges do not end");
            var cuts = replicas.Select(replica => replica.FindPurgeCut(purgeAt, 97)).ToArray();
            var purge = cuts[0] is { } first
                ? Entries.PurgeExpiredThroughKey(new CommandEnvelope(CommandEnvelope.NoSession, 0, purgeAt), first.ExpireAtMs, first.LastKey.Span)
                : Entries.PurgeExpired(new CommandEnvelope(CommandEnvelope.NoSession, 0, purgeAt), purgeAt);
            var index = applied.AppliedIndex + 1;
            var replies = replicas.Select(replica => replica.Apply(index, purge)).ToArray();
            var digest = applied.Digest();
            Assert.All(replicas, replica => Assert.True(digest == replica.Digest(), $"seed {seed}: the replicas removed different keys at index {index} ({string.Join(", ", replies)})"));
            Assert.Equal(cuts[0] is null ? replies[0] : Int(97), replies[0]);

            // And any of them, leading, would have proposed the same purge.
            Assert.All(cuts, cut => Assert.Equal(cuts[0]?.ExpireAtMs, cut?.ExpireAtMs));
            Assert.All(cuts, cut => Assert.Equal(cuts[0]?.LastKey.ToArray(), cut?.LastKey.ToArray()));
        }

        Assert.True(purges > names.Length / 97, $"seed {seed}: {purges} purges");
        Assert.All(replicas, replica => Assert.Equal(0, replica.StoredKeyCount));
    }

    private static string[] Stored(CacheHarness cache)
    {
        // Every stored key, expired or not, from a time before any expiry, sorted.
        var keys = cache.Machine.Keys(0);
        return [.. keys.Items.Select(item => System.Text.Encoding.UTF8.GetString(item.Bulk.Span)).Order(StringComparer.Ordinal)];
    }

    private static byte[] Snapshot(CacheStateMachine machine)
    {
        using var stream = new MemoryStream();
        machine.WriteSnapshot(stream);
        return stream.ToArray();
    }

    private sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();

        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}
