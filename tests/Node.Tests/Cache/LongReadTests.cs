using System.Text;
using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// Reads taken a slice at a time while writes apply between slices: KEYS still gives one instant's keys, and SCAN's
/// index, built or caught up in slices, still gives SCAN's guarantee.
/// </summary>
public sealed class LongReadTests
{
    [Fact]
    public void Keys_taken_in_slices_are_the_keys_of_the_instant_it_began_whatever_applies_between_slices()
    {
        for (var seed = 1; seed <= 20; seed++)
        {
            var random = new Random(seed);
            // The live machine goes on applying; the frozen one stops at the read's instant and is the oracle.
            var machines = new Machines(random.Next(2) == 0 ? 0 : 400_000);
            for (var i = 0; i < 2_000; i++)
            {
                machines.ApplyToBoth(RandomWrite(random, machines, mayFlush: false));
            }

            var readNow = machines.NowMs + random.Next(0, 30);
            var read = machines.Live.BeginKeys(readNow);
            var steps = 0;
            while (!read.Step(1 + random.Next(40)))
            {
                steps++;
                for (var w = random.Next(12); w > 0; w--)
                {
                    machines.ApplyToLive(RandomWrite(random, machines, mayFlush: true));
                }
            }

            Assert.True(steps > 10, $"seed {seed}: the read took {steps} steps");
            Assert.Equal(Text(machines.Frozen.Keys(readNow)), Text(read.ToReply(null)));
            Assert.Equal(Text(machines.Frozen.Keys(readNow, key => key[^1] == (byte)'7')), Text(read.ToReply(key => key[^1] == (byte)'7')));
            Assert.NotEqual(machines.Frozen.Digest(), machines.Live.Digest());
        }
    }

    [Fact]
    public void Mget_and_exists_taken_in_slices_see_every_key_as_it_stood_when_they_began_whatever_applies_between_slices()
    {
        for (var seed = 1; seed <= 24; seed++)
        {
            var random = new Random(seed);
            var machines = new Machines(random.Next(2) == 0 ? 0 : 400_000);
            for (var i = 0; i < 2_000; i++)
            {
                machines.ApplyToBoth(RandomWrite(random, machines, mayFlush: false));
            }

            // Keys that exist, that do not, named twice, and the counters; in an order unrelated to the write order.
            var keys = Enumerable.Range(0, 600)
                .Select(_ => random.Next(10) == 0 ? "n" + random.Next(50) : "k" + random.Next(3_500))
                .Select(key => (ReadOnlyMemory<byte>)Encoding.UTF8.GetBytes(key))
                .ToArray();
            var readNow = machines.NowMs + random.Next(0, 30);
            var values = random.Next(2) == 0;
            var read = machines.Live.BeginMultiKeyRead(keys, values, readNow);
            var steps = 0;
            while (!read.Step(1 + random.Next(40)))
            {
                steps++;
                for (var w = random.Next(12); w > 0; w--)
                {
                    machines.ApplyToLive(RandomWrite(random, machines, mayFlush: true));
                }
            }

            Assert.True(steps > 10, $"seed {seed}: the read took {steps} steps");
            if (values)
            {
                Assert.Equal(Values(machines.Frozen.MultiGet(keys, readNow)), Values(read.ToReply()));
                Assert.NotEqual(Values(machines.Frozen.MultiGet(keys, readNow)), Values(machines.Live.MultiGet(keys, readNow)));
            }
            else
            {
                Assert.Equal(machines.Frozen.CountExisting(keys, readNow), read.ToReply().Integer);
            }

            Assert.Equal(0, machines.Live.WalkCount);
        }
    }

    [Fact]
    public void A_multi_key_read_finishes_over_the_old_keys_when_flushall_or_a_snapshot_replaces_them()
    {
        foreach (var replace in new Action<CacheHarness>[]
        {
            cache => cache.Apply(Entries.FlushAll(cache.Envelope())),
            cache =>
            {
                var other = new CacheHarness();
                other.Set("k10", "from the snapshot");
                using var stream = new MemoryStream();
                other.Machine.WriteSnapshot(stream);
                cache.Machine.LoadSnapshot(new MemoryStream(stream.ToArray()));
            },
        })
        {
            var cache = new CacheHarness();
            var keys = Enumerable.Range(0, 100).Select(i => "k" + i).ToList();
            keys.ForEach(key => cache.Set(key, "v" + key));
            var read = cache.Machine.BeginMultiKeyRead([.. keys.Select(key => (ReadOnlyMemory<byte>)Encoding.UTF8.GetBytes(key))], values: true, cache.NowMs);
            read.Step(10);
            cache.Set("k50", "rewritten before the replacement");
            cache.Delete("k51");
            replace(cache);
            cache.Set("k60", "written after it");
            cache.Set("k52", "written after it");
            while (!read.Step(10))
            {
            }

            Assert.Equal(keys.Select(key => "v" + key), Values(read.ToReply()));
        }
    }

    [Fact]
    public void A_multi_key_read_stops_being_told_of_writes_once_done_or_abandoned()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        var empty = cache.Machine.BeginMultiKeyRead([], values: false, cache.NowMs);
        Assert.True(empty.Step(10));
        Assert.Equal(0, empty.ToReply().Integer);
        var abandoned = cache.Machine.BeginMultiKeyRead(["a"u8.ToArray(), "b"u8.ToArray()], values: true, cache.NowMs);
        abandoned.Step(1);
        abandoned.Abandon();
        Assert.Equal(0, cache.Machine.WalkCount);
        Assert.Throws<InvalidOperationException>(() => abandoned.ToReply());
    }

    [Fact]
    public void A_keys_read_finishes_over_the_old_keys_when_flushall_or_a_snapshot_replaces_them()
    {
        foreach (var replace in new Action<CacheHarness>[]
        {
            cache => cache.Apply(Entries.FlushAll(cache.Envelope())),
            cache =>
            {
                var other = new CacheHarness();
                other.Set("from-snapshot", "v");
                using var stream = new MemoryStream();
                other.Machine.WriteSnapshot(stream);
                cache.Machine.LoadSnapshot(new MemoryStream(stream.ToArray()));
            },
        })
        {
            var cache = new CacheHarness();
            var expected = Enumerable.Range(0, 100).Select(i => "k" + i).ToList();
            expected.ForEach(key => cache.Set(key, "v"));
            var read = cache.Machine.BeginKeys(cache.NowMs);
            read.Step(10);
            cache.Set("k50", "rewritten before the replacement");
            replace(cache);
            cache.Set("k60", "written after it");
            cache.Delete("k70");
            while (!read.Step(10))
            {
            }

            Assert.Equal(expected, Text(read.ToReply(null)));
        }
    }

    [Fact]
    public void A_keys_read_stops_being_told_of_writes_once_done_even_on_an_empty_cache()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 3; i++)
        {
            // KEYS * polled on an empty cache: a walk with nothing to yield is done before its first step.
            Assert.Empty(cache.Machine.Keys(cache.NowMs).Items);
            var read = cache.Machine.BeginKeys(cache.NowMs);
            Assert.True(read.Step(10));
            Assert.Empty(read.ToReply(null).Items);
        }

        cache.Set("k", "v");
        var last = cache.Machine.BeginKeys(cache.NowMs);
        Assert.True(last.Step(10));
        Assert.Equal(0, cache.Machine.WalkCount);
    }

    [Fact]
    public void A_scan_index_built_in_slices_places_no_more_than_a_slice_of_keys_at_a_time()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 10_000; i++)
        {
            cache.Set("key:" + i, "v");
        }

        var ticket = cache.Machine.PrepareScan();
        Assert.False(cache.Machine.TryScan(ticket, 0, 10, cache.NowMs, null, out _));
        var slices = 0;
        while (!cache.Machine.TryScan(ticket, 0, 10, cache.NowMs, null, out _))
        {
            var before = cache.Machine.ScanIndexSlots;
            cache.Machine.ScanWork(100);
            Assert.InRange(cache.Machine.ScanIndexSlots - before, 0, 100);
            slices++;
        }

        Assert.InRange(slices, 100, 10_000);
        while (cache.Machine.ScanWork(100))
        {
        }

        Assert.InRange(cache.Machine.ScanIndexRuns, 1, 14);
    }

    [Fact]
    public void Writes_between_the_slices_of_first_scans_and_catch_ups_keep_scans_guarantee()
    {
        for (var seed = 1; seed <= 10; seed++)
        {
            var random = new Random(seed);
            var cache = new CacheHarness();
            var initial = Enumerable.Range(0, 5_000).Select(i => "base:" + i).ToList();
            initial.ForEach(key => cache.Set(key, "v"));

            var gone = new HashSet<string>(StringComparer.Ordinal);
            var returned = new List<string>();
            var created = 0;
            ulong cursor = 0;
            do
            {
                var ticket = cache.Machine.PrepareScan();
                var page = default(ScanPage);
                while (!cache.Machine.TryScan(ticket, cursor, 1 + random.Next(30), cache.NowMs, null, out page))
                {
                    cache.Machine.ScanWork(1 + random.Next(200));
                    Churn(random, cache, initial, gone, ref created);
                }

                returned.AddRange(page.Keys.Select(key => Encoding.UTF8.GetString(key.Bulk.Span)));
                Assert.All(page.Keys, key => Assert.True(cache.Machine.ContainsKey(key.Bulk.Span, cache.NowMs)));
                cursor = page.NextCursor;
                Churn(random, cache, initial, gone, ref created);
                if (random.Next(5) == 0)
                {
                    cache.Machine.ScanWork(1 + random.Next(200));
                }
            }
            while (cursor != 0);

            var missing = initial.Where(key => !gone.Contains(key) && !returned.Contains(key)).ToList();
            Assert.True(missing.Count == 0, $"seed {seed}: {missing.Count} keys present throughout were not returned, e.g. {missing.FirstOrDefault()}");
            Assert.Equal(returned.Count, returned.Distinct(StringComparer.Ordinal).Count());
        }
    }

    /// <summary>Writes between slices; <paramref name="gone"/> collects the initial keys that stop being present.</summary>
    private static void Churn(Random random, CacheHarness cache, List<string> initial, HashSet<string> gone, ref int created)
    {
        for (var w = random.Next(30); w > 0; w--)
        {
            var victim = initial[random.Next(initial.Count)];
            switch (random.Next(8))
            {
                case 0:
                    cache.Delete(victim);
                    gone.Add(victim);
                    break;
                case 1:
                    cache.Set(victim, "rewritten");
                    break;
                case 2:
                    cache.Apply(Entries.Rename(cache.Envelope(), "new:" + random.Next(Math.Max(1, created)), "renamed:" + created));
                    break;
                case 3:
                    cache.Delete("new:" + random.Next(Math.Max(1, created)));
                    break;
                default:
                    cache.Set("new:" + created++, "v");
                    break;
            }
        }

        if (random.Next(100) == 0)
        {
            // A burst past what the index may fall behind by: it is dropped, and the next call builds a new one.
            var prefix = "burst:" + created + ":";
            var burst = Enumerable.Range(0, ScanIndex.MinimumSlack + 100).Select(i => prefix + i).ToArray();
            foreach (var key in burst)
            {
                cache.Set(key, "v");
            }

            cache.Delete(burst);
        }
    }

    /// <summary>One write of any kind that touches existing keys, new keys, expiry, or (rarely) every key.</summary>
    private static byte[] RandomWrite(Random random, Machines machines, bool mayFlush)
    {
        var envelope = new CommandEnvelope(CommandEnvelope.NoSession, 0, machines.NowMs);
        var key = "k" + random.Next(3_000);
        var other = "k" + random.Next(3_000);
        machines.NowMs += random.Next(0, 3);
        return random.Next(16) switch
        {
            0 => Entries.Delete(envelope, key, other),
            1 => Entries.Expire(envelope, key, machines.NowMs + random.Next(-5, 60)),
            2 => Entries.Persist(envelope, key),
            3 => Entries.IncrementBy(envelope, "n" + random.Next(50), 1),
            4 => Entries.Append(envelope, key, "+"),
            5 => Entries.GetExpire(envelope, key, random.Next(2) == 0 ? GetExpiry.Persist : GetExpiry.At, machines.NowMs + random.Next(-5, 60)),
            6 => Entries.GetDelete(envelope, key),
            7 => Entries.Rename(envelope, key, other, ifAbsent: random.Next(2) == 0),
            8 => Entries.MultiSet(envelope, key, "m", other, "m"),
            9 => Entries.PurgeExpired(envelope, machines.NowMs),
            10 => Entries.Set(envelope, key, "ttl", SetOptions.ExpiringAt(machines.NowMs + random.Next(1, 60))),
            11 when mayFlush && random.Next(400) == 0 => Entries.FlushAll(envelope),
            _ => Entries.Set(envelope, key, new string('v', random.Next(1, 200))),
        };
    }

    private static List<string?> Values(CacheReply reply) => [.. reply.Items.Select(item => item.Kind == CacheReplyKind.Nil ? null : Encoding.UTF8.GetString(item.Bulk.Span))];

    private static List<string> Text(CacheReply reply) => [.. reply.Items.Select(item => Encoding.UTF8.GetString(item.Bulk.Span))];

    /// <summary>Two replicas fed the same entries until the live one goes on alone.</summary>
    private sealed class Machines(long memoryCapBytes)
    {
        private ulong _nextLive = 1;
        private ulong _nextFrozen = 1;

        public CacheStateMachine Live { get; } = new(new CacheStateMachineOptions { MemoryCapBytes = memoryCapBytes });

        public CacheStateMachine Frozen { get; } = new(new CacheStateMachineOptions { MemoryCapBytes = memoryCapBytes });

        public long NowMs { get; set; } = 1_000_000;

        public void ApplyToBoth(byte[] entry)
        {
            ApplyToLive(entry);
            Frozen.Apply(_nextFrozen++, entry);
        }

        public void ApplyToLive(byte[] entry) => Live.Apply(_nextLive++, entry);
    }
}
