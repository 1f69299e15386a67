using System.Text;
using Dcache.Cache;
using Dcache.Node.Services;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Cache;

/// <summary>SCAN on the state machine: Redis's guarantees, with successive calls served by different replicas.</summary>
public sealed class ScanTests
{
    private const long Now = 1_000_000;

    [Theory]
    [InlineData(0, 10)]
    [InlineData(1, 1)]
    [InlineData(100, 1)]
    [InlineData(5_000, 7)]
    [InlineData(5_000, 10_000)]
    public void A_full_iteration_returns_every_key_once_when_nothing_changes(int keyCount, int count)
    {
        var cache = new CacheHarness();
        for (var i = 0; i < keyCount; i++)
        {
            cache.Set("key:" + i, "v");
        }

        var pages = Iterate(cursor => cache.Machine.Scan(cursor, count, cache.NowMs));
        var returned = pages.SelectMany(page => page.Keys).ToList();
        Assert.Equal(keyCount, returned.Count);
        Assert.Equal(Enumerable.Range(0, keyCount).Select(i => "key:" + i).Order(StringComparer.Ordinal), returned.Order(StringComparer.Ordinal));

        // Pages hold COUNT keys (no two of these keys share a position) and the order is SCAN's.
        Assert.All(pages.SkipLast(1), page => Assert.Equal(count, page.Keys.Count));
        var positions = returned.Select(key => ScanOrder.PositionOf(Entries.B(key))).ToList();
        Assert.Equal(positions.Order(), positions);
    }

    [Fact]
    public void A_count_above_the_page_limit_reads_a_page_of_the_limit_and_the_iteration_still_returns_every_key()
    {
        var cache = new CacheHarness();
        var keyCount = CacheStateMachine.MaxScanCount * 2 + 100;
        for (var i = 0; i < keyCount; i++)
        {
            cache.Set("key:" + i, "v");
        }

        var pages = Iterate(cursor => cache.Machine.Scan(cursor, int.MaxValue, cache.NowMs));
        Assert.Equal(3, pages.Count);
        Assert.All(pages.SkipLast(1), page => Assert.Equal(CacheStateMachine.MaxScanCount, page.Keys.Count));
        Assert.Equal(Enumerable.Range(0, keyCount).Select(i => "key:" + i).Order(StringComparer.Ordinal), pages.SelectMany(page => page.Keys).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Cursors_are_positions_within_signed_64_bits_and_0_only_at_the_end()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 1_000; i++)
        {
            cache.Set("k" + i, "v");
        }

        var pages = Iterate(cursor => cache.Machine.Scan(cursor, 3, cache.NowMs));
        Assert.All(pages.SkipLast(1), page => Assert.InRange(page.NextCursor, 1UL, (ulong)long.MaxValue));
        Assert.Equal(0UL, pages[^1].NextCursor);
        Assert.Equal("0 []", Describe(cache.Machine.Scan(ulong.MaxValue, 10, cache.NowMs)));
        Assert.Equal("0 []", Describe(cache.Machine.Scan((ulong)long.MaxValue + 1, 10, cache.NowMs)));
        Assert.Throws<ArgumentOutOfRangeException>(() => cache.Machine.Scan(0, 0, cache.NowMs));
    }

    [Fact]
    public void The_order_is_fixed_for_every_process_and_build()
    {
        // A cursor handed out by one replica is a position on every other, whatever its build: this hash must not change.
        Assert.Equal(ScanOrder.PositionOf("key"u8), ScanOrder.PositionOf(Entries.B("key")));
        // SipHash-1-3 under the key "dcache-s" "can-ordr", top 63 bits, computed by an independent implementation.
        Assert.Equal(2141325015359977980L, ScanOrder.PositionOf(""u8));
        Assert.Equal(3218989922568865842L, ScanOrder.PositionOf("key:1"u8));
        Assert.Equal(9002412655564982632L, ScanOrder.PositionOf("a much longer key than one word of eight bytes"u8));
        Assert.All(Enumerable.Range(0, 1_000), i => Assert.InRange(ScanOrder.PositionOf(Entries.B("k" + i)), 0, long.MaxValue));
    }

    [Fact]
    public void Keys_present_throughout_are_returned_while_other_keys_are_written_deleted_and_expire()
    {
        for (var seed = 1; seed <= 10; seed++)
        {
            var random = new Random(seed);
            var replicas = new Replicas(3);
            var initial = Enumerable.Range(0, 2_000).Select(i => "base:" + i).ToList();
            foreach (var key in initial)
            {
                replicas.Set(key, "v");
            }

            var gone = new HashSet<string>(StringComparer.Ordinal);
            var returned = new HashSet<string>(StringComparer.Ordinal);
            var created = 0;
            ulong cursor = 0;
            var calls = 0;
            do
            {
                // Each call may go to any replica, and replicas restart from their snapshot (a new index, a new seed).
                var replica = random.Next(3);
                if (random.Next(10) == 0)
                {
                    replicas.Restart(replica);
                }

                var readNow = replicas.NowMs + random.Next(0, 50);
                var page = Text(replicas[replica].Scan(cursor, 1 + random.Next(20), readNow));
                Assert.All(page.Keys, key => Assert.True(replicas[replica].ContainsKey(Entries.B(key), readNow), $"seed {seed}: {key} is not live"));
                returned.UnionWith(page.Keys);
                cursor = page.NextCursor;
                calls++;

                Churn(random, replicas, initial, gone, ref created);
            }
            while (cursor != 0);

            var missing = initial.Where(key => !gone.Contains(key) && !returned.Contains(key)).ToList();
            Assert.True(missing.Count == 0, $"seed {seed}: {missing.Count} keys present throughout were not returned, e.g. {missing.FirstOrDefault()}; {calls} calls");
        }
    }

    [Fact]
    public void A_replica_restored_from_a_snapshot_gives_the_same_pages_for_the_same_cursors()
    {
        var random = new Random(7);
        var replicas = new Replicas(1);
        var initial = Enumerable.Range(0, 3_000).Select(i => "base:" + i).ToList();
        foreach (var key in initial)
        {
            replicas.Set(key, new string('x', random.Next(10)));
        }

        // The live replica has scanned along the way, so its index has runs and removed keys the restored one lacks.
        var gone = new HashSet<string>(StringComparer.Ordinal);
        var created = 0;
        ulong cursor = 0;
        for (var i = 0; i < 200; i++)
        {
            cursor = replicas[0].Scan(cursor, 5, replicas.NowMs).NextCursor;
            Churn(random, replicas, initial, gone, ref created);
        }

        var live = replicas[0];
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(live)), live.Options);
        var readNow = replicas.NowMs + 20;
        foreach (var count in new[] { 1, 10, 97 })
        {
            var pagesOfLive = Iterate(c => live.Scan(c, count, readNow));
            var pagesOfRestored = Iterate(c => restored.Scan(c, count, readNow));
            Assert.Equal(pagesOfLive.Count, pagesOfRestored.Count);
            Assert.Equal(pagesOfLive.Select(page => page.ToString()), pagesOfRestored.Select(page => page.ToString()));
        }
    }

    [Fact]
    public void Expired_keys_are_never_returned_but_count_as_visited()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 100; i++)
        {
            if (i % 2 == 0)
            {
                cache.SetExpiringIn("k" + i, "v", 10);
            }
            else
            {
                cache.Set("k" + i, "v");
            }
        }

        var later = cache.NowMs + 10;
        var pages = Iterate(cursor => cache.Machine.Scan(cursor, 10, later));
        var returned = pages.SelectMany(page => page.Keys).ToList();
        Assert.Equal(Enumerable.Range(0, 50).Select(i => "k" + ((2 * i) + 1)).Order(StringComparer.Ordinal), returned.Order(StringComparer.Ordinal));
        Assert.Equal(10, pages.Count);
        Assert.Equal(100, Iterate(cursor => cache.Machine.Scan(cursor, 10, cache.NowMs)).Sum(page => page.Keys.Count));
    }

    [Fact]
    public void A_filter_chooses_keys_without_changing_what_a_call_visits()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 200; i++)
        {
            cache.Set((i % 4 == 0 ? "user:" : "order:") + i, "v");
        }

        var pages = Iterate(cursor => cache.Machine.Scan(cursor, 20, cache.NowMs, key => key.StartsWith("user:"u8)));
        Assert.Equal(10, pages.Count);
        Assert.Equal(50, pages.Sum(page => page.Keys.Count));
        Assert.All(pages.SelectMany(page => page.Keys), key => Assert.StartsWith("user:", key, StringComparison.Ordinal));
    }

    [Fact]
    public void Keys_sharing_a_position_come_back_together_in_byte_order()
    {
        // Real collisions of a 63-bit hash cannot be found here, so the entries get their positions by hand.
        var entries = new (string Key, long Position)[]
        {
            ("c", 5), ("a", 5), ("b", 5), ("y", 7), ("x", 7), ("last", long.MaxValue), ("also-last", long.MaxValue),
        }.Select(pair => new CacheEntry(Entries.B(pair.Key), ReadOnlyMemory<byte>.Empty) { ScanPosition = pair.Position }).ToArray();
        for (var i = 1; i < entries.Length; i++)
        {
            entries[i - 1].Newer = entries[i];
            entries[i].Older = entries[i - 1];
        }

        var index = ScanIndex.Build(entries[0], entries.Length);
        Assert.Equal("6 [a b c]", Describe(index.ReadPage(0, 1, Now, null)));
        Assert.Equal("6 [a b c]", Describe(index.ReadPage(5, 2, Now, null)));
        Assert.Equal("8 [x y]", Describe(index.ReadPage(6, 1, Now, null)));
        Assert.Equal("0 [also-last last]", Describe(index.ReadPage(8, 1, Now, null)));
        Assert.Equal("0 [a b c x y also-last last]", Describe(index.ReadPage(0, 100, Now, null)));
    }

    [Fact]
    public void Created_keys_join_through_merged_runs_and_removed_ones_are_skipped()
    {
        var first = new CacheEntry(Entries.B("first"), ReadOnlyMemory<byte>.Empty);
        var index = ScanIndex.Build(first, 1);
        var all = new List<CacheEntry> { first };
        for (var batch = 1; batch <= 300; batch++)
        {
            for (var i = 0; i < batch % 17; i++)
            {
                var entry = new CacheEntry(Entries.B($"k{batch}.{i}"), ReadOnlyMemory<byte>.Empty);
                all.Add(entry);
                Assert.True(index.NoteCreated(entry));
            }

            CatchUp(index);
            Assert.InRange(index.RunCount, 1, (int)Math.Log2(all.Count) + 1);
        }

        foreach (var removed in all.Where((_, i) => i % 3 == 0).ToList())
        {
            Assert.True(index.NoteRemoved(removed, cacheUsedBytes: 0));
            all.Remove(removed);
        }

        var pages = Iterate(cursor => index.ReadPage((long)cursor, 9, Now, null));
        Assert.Equal(all.Select(entry => Encoding.UTF8.GetString(entry.Key)).Order(StringComparer.Ordinal), pages.SelectMany(page => page.Keys).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void An_index_that_falls_far_behind_asks_to_be_dropped()
    {
        var first = new CacheEntry(Entries.B("first"), ReadOnlyMemory<byte>.Empty);
        var index = ScanIndex.Build(first, 1);
        for (var i = 0; i < ScanIndex.MinimumSlack; i++)
        {
            Assert.True(index.NoteCreated(new CacheEntry(Entries.B("k" + i), ReadOnlyMemory<byte>.Empty)));
        }

        Assert.False(index.NoteCreated(new CacheEntry(Entries.B("one too many"), ReadOnlyMemory<byte>.Empty)));
    }

    [Fact]
    public void An_index_that_keeps_too_many_bytes_of_removed_keys_alive_asks_to_be_dropped()
    {
        // One large value set and deleted over and over: few keys, but each removal keeps its value alive in the index.
        var first = new CacheEntry(Entries.B("first"), ReadOnlyMemory<byte>.Empty);
        var index = ScanIndex.Build(first, 1);
        var value = new byte[1 << 20];
        var removals = 0;
        while (true)
        {
            var created = new CacheEntry(Entries.B("big"), value);
            Assert.True(index.NoteCreated(created));
            if (!index.NoteRemoved(created, cacheUsedBytes: value.Length))
            {
                break;
            }

            removals++;
            Assert.True(removals < ScanIndex.MinimumSlack, "the index never asked to be dropped");
        }

        // About MinimumRetainedBytes worth of 1 MiB values, far fewer than MinimumSlack keys.
        Assert.InRange(removals, (ScanIndex.MinimumRetainedBytes >> 20) - 2, ScanIndex.MinimumRetainedBytes >> 20);
    }

    [Fact]
    public void Flushall_and_loading_a_snapshot_leave_nothing_of_the_old_keys()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 100; i++)
        {
            cache.Set("old" + i, "v");
        }

        Assert.Equal(100, Iterate(cursor => cache.Machine.Scan(cursor, 7, cache.NowMs)).Sum(page => page.Keys.Count));
        cache.Apply(Entries.FlushAll(cache.Envelope()));
        cache.Set("new", "v");
        Assert.Equal(["new"], Iterate(cursor => cache.Machine.Scan(cursor, 7, cache.NowMs)).SelectMany(page => page.Keys));

        var other = new CacheHarness();
        other.Set("from-snapshot", "v");
        cache.Machine.LoadSnapshot(new MemoryStream(Snapshot(other.Machine)));
        Assert.Equal(["from-snapshot"], Iterate(cursor => cache.Machine.Scan(cursor, 7, cache.NowMs)).SelectMany(page => page.Keys));
    }

    [Fact]
    public void The_node_answers_scan_with_the_cursor_and_the_keys_matching_its_pattern()
    {
        var cache = new CacheHarness();
        foreach (var key in new[] { "user:1", "user:2", "User:3", "order:1" })
        {
            cache.Set(key, "v");
        }

        var reply = ReadExecutor.Execute(new Proto.Command { Id = 9, Scan = new Proto.ScanRequest { Cursor = 0, Count = 100, Pattern = Google.Protobuf.ByteString.CopyFromUtf8("user:*") } }, cache.Machine, cache.NowMs);
        Assert.Equal(9UL, reply.Id);
        Assert.Equal("0", reply.Array.Items[0].Bulk.ToStringUtf8());
        Assert.Equal(["user:1", "user:2"], reply.Array.Items[1].Array.Items.Select(item => item.Bulk.ToStringUtf8()).Order(StringComparer.Ordinal));

        var all = ReadExecutor.Execute(new Proto.Command { Scan = new Proto.ScanRequest { Cursor = 0, Count = 2, Pattern = Google.Protobuf.ByteString.CopyFromUtf8("*") } }, cache.Machine, cache.NowMs);
        Assert.Equal(2, all.Array.Items[1].Array.Items.Count);
        Assert.NotEqual("0", all.Array.Items[0].Bulk.ToStringUtf8());

        var huge = ReadExecutor.Execute(new Proto.Command { Scan = new Proto.ScanRequest { Cursor = 0, Count = ulong.MaxValue, Pattern = Google.Protobuf.ByteString.CopyFromUtf8("*") } }, cache.Machine, cache.NowMs);
        Assert.Equal(4, huge.Array.Items[1].Array.Items.Count);
        Assert.Equal("ERR syntax error", WriteEncoder.Validate(new Proto.Command { Scan = new Proto.ScanRequest { Count = 0 } }));
    }

    /// <summary>Random writes between two SCAN calls; <paramref name="gone"/> collects the initial keys that stop being present.</summary>
    private static void Churn(Random random, Replicas replicas, List<string> initial, HashSet<string> gone, ref int created)
    {
        if (random.Next(20) == 0)
        {
            // A burst: more keys created than the index may fall behind by (it is dropped and rebuilt), then removed.
            var burst = Enumerable.Range(0, ScanIndex.MinimumSlack + 100).Select(i => "burst:" + i).ToArray();
            foreach (var key in burst)
            {
                replicas.Set(key, "v");
            }

            replicas.Apply(Entries.Delete(replicas.Envelope(), burst));
        }

        // Fewer keys created per call than a call visits, or the iteration would never reach the end.
        var writes = random.Next(12);
        for (var w = 0; w < writes; w++)
        {
            var victim = initial[random.Next(initial.Count)];
            switch (random.Next(10))
            {
                case 0:
                    replicas.Apply(Entries.Delete(replicas.Envelope(), victim));
                    gone.Add(victim);
                    break;
                case 1:
                    replicas.Apply(Entries.Set(replicas.Envelope(), victim, "short-lived", SetOptions.ExpiringAt(replicas.NowMs + random.Next(1, 40))));
                    gone.Add(victim);
                    break;
                case 2:
                    // Rewritten: moves to the newest end of the write order, and stays present.
                    replicas.Apply(Entries.Append(replicas.Envelope(), victim, "+"));
                    break;
                case 3:
                    replicas.Apply(Entries.Rename(replicas.Envelope(), "new:" + random.Next(Math.Max(1, created)), "renamed:" + created));
                    break;
                case 4 when random.Next(50) == 0:
                    replicas.Apply(Entries.PurgeExpired(replicas.Envelope(), replicas.NowMs));
                    break;
                default:
                    replicas.Set("new:" + created++, "v");
                    break;
            }

            if (random.Next(30) == 0)
            {
                // Created keys deleted again, so that removed keys pile up in the index.
                var createdSoFar = Math.Max(1, created);
                replicas.Apply(Entries.Delete(replicas.Envelope(), [.. Enumerable.Range(0, 50).Select(_ => "new:" + random.Next(createdSoFar))]));
            }
        }

        replicas.NowMs += random.Next(0, 10);
    }

    /// <summary>Places every key created so far and finishes the merges, as a SCAN call does.</summary>
    private static void CatchUp(ScanIndex index)
    {
        index.RequestCatchUp(index.ReadMark);
        while (index.Work(int.MaxValue))
        {
        }
    }

    private static List<ScanPageText> Iterate(Func<ulong, ScanPage> scan)
    {
        var pages = new List<ScanPageText>();
        ulong cursor = 0;
        do
        {
            var page = Text(scan(cursor));
            pages.Add(page);
            cursor = page.NextCursor;
            Assert.True(pages.Count < 1_000_000, "the iteration does not end");
        }
        while (cursor != 0);

        return pages;
    }

    private static ScanPageText Text(ScanPage page) => new(page.NextCursor, [.. page.Keys.Select(key => Encoding.UTF8.GetString(key.Bulk.Span))]);

    private static string Describe(ScanPage page) => Text(page).ToString();

    private static byte[] Snapshot(CacheStateMachine machine)
    {
        using var stream = new MemoryStream();
        machine.WriteSnapshot(stream);
        return stream.ToArray();
    }

    private sealed record ScanPageText(ulong NextCursor, List<string> Keys)
    {
        public override string ToString() => $"{NextCursor} [{string.Join(' ', Keys)}]";
    }

    /// <summary>State machines fed the same entries, as the replicas of one cluster are; any may restart from its snapshot.</summary>
    private sealed class Replicas
    {
        private readonly CacheStateMachine[] _machines;
        private ulong _nextIndex = 1;

        public Replicas(int count)
        {
            _machines = [.. Enumerable.Range(0, count).Select(_ => new CacheStateMachine())];
        }

        public long NowMs { get; set; } = Now;

        public CacheStateMachine this[int replica] => _machines[replica];

        public CommandEnvelope Envelope() => new(CommandEnvelope.NoSession, 0, NowMs);

        public void Set(string key, string value) => Apply(Entries.Set(Envelope(), key, value));

        public void Apply(byte[] entry)
        {
            var replies = _machines.Select(machine => machine.Apply(_nextIndex, entry)).ToList();
            Assert.All(replies, reply => Assert.Equal(replies[0], reply));
            _nextIndex++;
        }

        public void Restart(int replica) =>
            _machines[replica] = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(_machines[replica])), _machines[replica].Options);
    }
}
