using System.Diagnostics;
using System.Globalization;
using System.Text;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Services;
using Dcache.Node.Tests.Cache;
using Google.Protobuf;
using Xunit.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>The driver loop's long reads: served a slice per round, with writes applying between rounds.</summary>
public sealed class LongReadsTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Keys_and_a_first_scan_take_many_rounds_and_answer_as_of_their_instant()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 20_000; i++)
        {
            cache.Set("key:" + i, "v");
        }

        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var expectedKeys = cache.Machine.Keys(cache.NowMs, key => key.StartsWith("key:1"u8)).Items.Select(item => item.Bulk.ToArray()).ToList();
        var keys = Serve(reads, cache, new Proto.Command { Id = 1, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("key:1*") } });
        var scan = Serve(reads, cache, new Proto.Command { Id = 2, Scan = new Proto.ScanRequest { Cursor = 0, Count = 10, Pattern = ByteString.CopyFromUtf8("*") } });
        var rounds = 0;
        while (reads.HasWork)
        {
            reads.RunSlice(cache.NowMs);
            rounds++;
            // Writes between rounds: new keys, rewrites and removals of keys KEYS has not reached yet.
            cache.Set("key:1new" + rounds, "v");
            cache.Set("key:1" + (19_999 - rounds), "rewritten");
            cache.Delete("key:1" + (9_999 - rounds));
        }

        Assert.InRange(rounds, 40, 20_000);
        var keysReply = await keys.Task.WaitAsync(Deadline);
        Assert.Equal(1UL, keysReply.Id);
        Assert.Equal(expectedKeys.Select(key => Convert.ToHexString(key)), keysReply.Array.Items.Select(item => Convert.ToHexString(item.Bulk.Span)));
        var scanReply = await scan.Task.WaitAsync(Deadline);
        Assert.Equal(10, scanReply.Array.Items[1].Array.Items.Count);
    }

    [Fact]
    public async Task A_large_mget_or_exists_takes_a_slice_per_round_and_answers_as_of_its_instant()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 20_000; i++)
        {
            cache.Set("key:" + i, "v" + i);
        }

        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var names = Enumerable.Range(0, 12_000).Select(i => ByteString.CopyFromUtf8("key:" + (i * 7 % 24_000))).ToList();
        var mget = new Proto.Command { Id = 1, Mget = new Proto.MGetRequest { Keys = { names } } };
        var exists = new Proto.Command { Id = 2, Exists = new Proto.ExistsRequest { Keys = { names } } };
        var rounds = 0;
        int RunWithWrites()
        {
            var before = rounds;
            while (reads.HasWork)
            {
                reads.RunSlice(cache.NowMs);
                rounds++;
                // Writes between rounds: rewrites and removals of keys the reads have not reached yet, and new keys they name.
                cache.Set("key:" + (19_999 - rounds), "rewritten");
                cache.Delete("key:" + (9_999 - rounds));
                cache.Set("key:" + (20_000 + rounds), "created");
            }

            return rounds - before;
        }

        var expectedValues = names.Select(name => cache.Machine.Get(name.Span, cache.NowMs)).Select(reply => reply.Kind == CacheReplyKind.Nil ? null : Encoding.UTF8.GetString(reply.Bulk.Span)).ToList();
        var values = Serve(reads, cache, mget);
        var small = Serve(reads, cache, new Proto.Command { Id = 3, Mget = new Proto.MGetRequest { Keys = { ByteString.CopyFromUtf8("key:1") } } });
        Assert.True(small.Task.IsCompleted);
        Assert.Equal(24, RunWithWrites());
        var valuesReply = await values.Task.WaitAsync(Deadline);
        Assert.Equal(expectedValues, valuesReply.Array.Items.Select(item => item.ResultCase == Proto.Reply.ResultOneofCase.Nil ? null : item.Bulk.ToStringUtf8()));
        Assert.NotEqual(expectedValues, names.Select(name => cache.Machine.Get(name.Span, cache.NowMs)).Select(reply => reply.Kind == CacheReplyKind.Nil ? null : Encoding.UTF8.GetString(reply.Bulk.Span)));

        var expectedCount = names.Count(name => cache.Machine.ContainsKey(name.Span, cache.NowMs));
        var count = Serve(reads, cache, exists);
        Assert.Equal(24, RunWithWrites());
        Assert.Equal(expectedCount, (await count.Task.WaitAsync(Deadline)).Integer);
        Assert.NotEqual(expectedCount, names.Count(name => cache.Machine.ContainsKey(name.Span, cache.NowMs)));

        // One at a time, each no more than a slice per round.
        var both = new[] { Serve(reads, cache, mget), Serve(reads, cache, exists) };
        Assert.Equal(48, RunWithWrites());
        await Task.WhenAll(both.Select(reply => reply.Task)).WaitAsync(Deadline);
        Assert.Equal(0, cache.Machine.WalkCount);
    }

    [Fact]
    public async Task A_large_watch_takes_a_slice_per_round_and_answers_the_index_and_liveness_of_its_instant()
    {
        // A WATCH names as many keys as an EXISTS (about a million in a 16 MiB request): in one call it held the loop, and
        // with it heartbeats, for as long as a million lookups and their reply take.
        var cache = new CacheHarness();
        cache.Apply(Entries.WatchedTransaction(cache.Envelope(), [])); // the revision floor: WATCH answers from here on
        for (var i = 0; i < 20_000; i++)
        {
            cache.Set("key:" + i, "v" + i);
        }

        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var names = Enumerable.Range(0, 12_000).Select(i => ByteString.CopyFromUtf8("key:" + (i * 7 % 24_000))).ToList();
        var expected = cache.Machine.Watch(ReadExecutor.Keys(new Google.Protobuf.Collections.RepeatedField<ByteString> { names }), cache.NowMs);
        var watch = Serve(reads, cache, new Proto.Command { Id = 1, Watch = new Proto.WatchRequest { Keys = { names } } });
        var rounds = 0;
        while (reads.HasWork)
        {
            reads.RunSlice(cache.NowMs);
            rounds++;
            // Writes between rounds: removals of keys the read has not reached yet, and new keys it names.
            cache.Delete("key:" + (9_999 - rounds));
            cache.Set("key:" + (20_000 + rounds), "created");
        }

        Assert.Equal(24, rounds);
        var reply = await watch.Task.WaitAsync(Deadline);
        Assert.Equal(1UL, reply.Id);
        Assert.Equal(expected.Items.Select(item => item.Integer), reply.Array.Items.Select(item => item.Integer));
        Assert.NotEqual(cache.Machine.AppliedIndex, (ulong)reply.Array.Items[0].Integer);
        Assert.Equal(0, cache.Machine.WalkCount);

        // Before the revision floor, at once: nil.
        var fresh = new CacheHarness();
        var early = Serve(new LongReads(fresh.Machine, sliceKeys: 500), fresh, new Proto.Command { Id = 2, Watch = new Proto.WatchRequest { Keys = { names } } });
        Assert.Equal(Proto.Reply.ResultOneofCase.Nil, (await early.Task.WaitAsync(Deadline)).ResultCase);
    }

    [Fact]
    public async Task A_large_read_in_progress_or_waiting_fails_when_the_loop_stops()
    {
        var cache = new CacheHarness();
        var exists = new Proto.ExistsRequest();
        exists.Keys.AddRange(Enumerable.Range(0, 2_000).Select(i => ByteString.CopyFromUtf8("key:" + i)));
        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var first = Serve(reads, cache, new Proto.Command { Id = 1, Exists = exists });
        var second = Serve(reads, cache, new Proto.Command { Id = 2, Exists = exists });
        reads.RunSlice(cache.NowMs);
        reads.FailAll("the node stopped");
        foreach (var reply in new[] { first, second })
        {
            Assert.Equal(Proto.FailureKind.Unavailable, (await reply.Task.WaitAsync(Deadline)).Failure.Kind);
        }

        Assert.False(reads.HasWork);
        Assert.Equal(0, cache.Machine.WalkCount);
    }

    [Fact]
    public async Task A_long_read_past_its_deadline_or_whose_stream_closed_is_dropped_in_progress_or_queued_and_lets_go_of_what_it_kept()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 20_000; i++)
        {
            cache.Set("key:" + i, "v" + i);
        }

        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var deadline = cache.NowMs + 1_000;
        var names = Enumerable.Range(0, 12_000).Select(i => ByteString.CopyFromUtf8("key:" + (i * 7 % 24_000))).ToList();
        var keysAll = new Proto.Command { Id = 1, Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };
        var overdue = Serve(reads, cache, keysAll, deadline);
        var closed = new ClosedStream();
        reads.Serve(new CommandInput(new Proto.Command { Id = 2, Mget = new Proto.MGetRequest { Keys = { names } } }, closed, long.MaxValue), cache.NowMs);
        var queuedOverdue = Serve(reads, cache, keysAll, deadline);
        var wanted = Serve(reads, cache, new Proto.Command { Id = 3, Exists = new Proto.ExistsRequest { Keys = { names } } });
        reads.RunSlice(cache.NowMs);
        for (var i = 0; i < 100; i++)
        {
            // Rewrites the reads in progress keep aside, as they were at their instant.
            cache.Set("key:" + (19_999 - i), "rewritten");
        }

        Assert.Equal(2, cache.Machine.WalkCount);
        reads.DropUnwanted(deadline - 1);
        Assert.False(overdue.Task.IsCompleted);
        reads.DropUnwanted(deadline);

        Assert.Equal(0, cache.Machine.WalkCount);
        foreach (var dropped in new[] { overdue, queuedOverdue })
        {
            Assert.Equal(Proto.FailureKind.Unavailable, (await dropped.Task.WaitAsync(Deadline)).Failure?.Kind);
        }

        Assert.Equal(Proto.FailureKind.Unavailable, Assert.Single(closed.Discarded).Failure?.Kind);

        // The read still waited for starts in the next round, as of then.
        var expectedCount = names.Count(name => cache.Machine.ContainsKey(name.Span, cache.NowMs));
        while (reads.HasWork)
        {
            reads.RunSlice(cache.NowMs);
        }

        Assert.Equal(expectedCount, (await wanted.Task.WaitAsync(Deadline)).Integer);
        Assert.Equal(0, cache.Machine.WalkCount);
    }

    [Fact]
    public async Task A_scan_on_a_current_index_and_other_reads_are_answered_at_once()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        var reads = new LongReads(cache.Machine, sliceKeys: 500);
        var scan = Serve(reads, cache, new Proto.Command { Id = 1, Scan = new Proto.ScanRequest { Cursor = 0, Count = 10, Pattern = ByteString.CopyFromUtf8("*") } });
        reads.RunSlice(cache.NowMs);
        Assert.True(scan.Task.IsCompleted);
        var again = Serve(reads, cache, new Proto.Command { Id = 2, Scan = new Proto.ScanRequest { Cursor = 0, Count = 10, Pattern = ByteString.CopyFromUtf8("*") } });
        var get = Serve(reads, cache, new Proto.Command { Id = 3, Get = new Proto.GetRequest { Key = ByteString.CopyFromUtf8("a") } });
        Assert.True(again.Task.IsCompleted);
        Assert.True(get.Task.IsCompleted);
        Assert.Equal("1", (await get.Task).Bulk.ToStringUtf8());
    }

    /// <summary>
    /// What one loop round spends on a long read, printed rather than asserted (timings belong to benchmarks; the slicing
    /// and the answers are asserted): the longest round of a first SCAN, of KEYS *, and of EXISTS and MGET of many keys
    /// taken in slices, against the same reads done in one call (how the loop served them before). 100,000 keys by default; DCACHE_LONG_READ_KEYS=3000000 for the benchmarks.md figures, and
    /// DCACHE_LONG_READ_SHUFFLE=1 to rewrite every key once in random order first (a write order spread over memory, as
    /// in a cache that has run for a while). See them with
    /// <c>dotnet test tests/Node.Tests -c Release --filter LongReadsTests --logger "console;verbosity=detailed"</c>.
    /// </summary>
    [Fact]
    public async Task The_longest_round_of_a_long_read_reports_its_cost()
    {
        var keyCount = int.TryParse(Environment.GetEnvironmentVariable("DCACHE_LONG_READ_KEYS"), CultureInfo.InvariantCulture, out var configured) ? configured : 100_000;
        var shuffle = Environment.GetEnvironmentVariable("DCACHE_LONG_READ_SHUFFLE") == "1";
        // Two caches loaded alike: one for each way of building SCAN's index.
        var (before, cache) = (Load(keyCount, shuffle), Load(keyCount, shuffle));
        var scanAll = new Proto.Command { Scan = new Proto.ScanRequest { Cursor = 0, Count = 10, Pattern = ByteString.CopyFromUtf8("*") } };
        var keysAll = new Proto.Command { Keys = new Proto.KeysRequest { Pattern = ByteString.CopyFromUtf8("*") } };
        // As many keys as a 16 MiB request holds (about a million of these), in random order, and an MGET of as many as a
        // 16 MiB reply of 100-byte values holds.
        var named = Enumerable.Range(0, Math.Min(keyCount, 1_000_000)).Select(i => ByteString.CopyFromUtf8("key:" + i)).ToArray();
        new Random(1).Shuffle(named);
        var existsMany = new Proto.Command { Exists = new Proto.ExistsRequest { Keys = { named } } };
        var mgetMany = new Proto.Command { Mget = new Proto.MGetRequest { Keys = { named.Take(150_000) } } };
        var clock = Stopwatch.StartNew();
        ReadExecutor.Execute(scanAll, new CacheHarness().Machine, cache.NowMs);
        foreach (var (name, command) in new[] { ("first SCAN", scanAll), ("KEYS *", keysAll), ($"EXISTS of {existsMany.Exists.Keys.Count:N0} keys", existsMany), ($"MGET of {mgetMany.Mget.Keys.Count:N0} keys", mgetMany) })
        {
            GC.Collect();
            clock.Restart();
            ReadExecutor.Execute(command, before.Machine, before.NowMs);
            output.WriteLine($"{keyCount:N0} keys{(shuffle ? " (shuffled)" : "")}, {name} in one call (the loop before): {clock.Elapsed.TotalMilliseconds:N0} ms");
        }

        foreach (var (name, command) in new[] { ("first SCAN", scanAll), ("KEYS *", keysAll), ($"EXISTS of {existsMany.Exists.Keys.Count:N0} keys", existsMany), ($"MGET of {mgetMany.Mget.Keys.Count:N0} keys", mgetMany) })
        {
            GC.Collect();
            var keysAtItsInstant = cache.Machine.StoredKeyCount;
            var reads = new LongReads(cache.Machine, sliceKeys: 4096);
            var longest = TimeSpan.Zero;
            var rounds = 0;
            var over5ms = 0;
            var longestPause = TimeSpan.Zero;
            clock.Restart();
            var reply = Serve(reads, cache, command);
            var total = Stopwatch.StartNew();
            longest = clock.Elapsed;
            while (reads.HasWork)
            {
                var pausedBefore = GC.GetTotalPauseDuration();
                clock.Restart();
                reads.RunSlice(cache.NowMs);
                var paused = GC.GetTotalPauseDuration() - pausedBefore;
                longestPause = paused > longestPause ? paused : longestPause;
                longest = clock.Elapsed > longest ? clock.Elapsed : longest;
                over5ms += clock.Elapsed.TotalMilliseconds > 5 ? 1 : 0;
                rounds++;
                // The loop applies writes between rounds.
                cache.Set("during:" + rounds, "v");
            }

            var answer = await reply.Task.WaitAsync(Deadline);
            output.WriteLine($"{keyCount:N0} keys{(shuffle ? " (shuffled)" : "")}, {name} in slices of 4096: {rounds:N0} rounds, longest {longest.TotalMilliseconds:N1} ms, {over5ms} over 5 ms (the longest GC pause in a round: {longestPause.TotalMilliseconds:N1} ms), answered after {total.Elapsed.TotalMilliseconds:N0} ms");

            // The timings are only printed; what they describe is asserted: the read went a slice per round, and answered
            // as of its instant, whatever the writes between the rounds did.
            var walked = command.OpCase switch
            {
                Proto.Command.OpOneofCase.Exists => command.Exists.Keys.Count,
                Proto.Command.OpOneofCase.Mget => command.Mget.Keys.Count,
                _ => keysAtItsInstant,
            };
            Assert.True(rounds >= walked / 4096, $"{name}: {rounds} rounds for {walked:N0} keys in slices of 4096");
            switch (command.OpCase)
            {
                case Proto.Command.OpOneofCase.Scan:
                    Assert.Equal(10, answer.Array.Items[1].Array.Items.Count);
                    break;
                case Proto.Command.OpOneofCase.Keys:
                    Assert.Equal(keysAtItsInstant, answer.Array.Items.Count);
                    break;
                case Proto.Command.OpOneofCase.Exists:
                    Assert.Equal(walked, answer.Integer);
                    break;
                default:
                    Assert.Equal(walked, answer.Array.Items.Count(item => item.Bulk.ToStringUtf8().StartsWith("a value of 20 bytes", StringComparison.Ordinal)));
                    break;
            }
        }
    }

    /// <summary>A cache of <paramref name="keyCount"/> keys; <paramref name="shuffle"/>: each rewritten once in random order, spreading the write order over memory.</summary>
    internal static CacheHarness Load(int keyCount, bool shuffle)
    {
        var cache = new CacheHarness();
        for (var i = 0; i < keyCount; i++)
        {
            cache.Set("key:" + i, "a value of 20 bytes.");
        }

        if (shuffle)
        {
            var random = new Random(1);
            foreach (var i in Enumerable.Range(0, keyCount).OrderBy(_ => random.Next()).ToList())
            {
                cache.Set("key:" + i, "a value of 20 bytes!");
            }
        }

        return cache;
    }

    private static TaskReplySink Serve(LongReads reads, CacheHarness cache, Proto.Command command, long deadlineMs = long.MaxValue)
    {
        var replies = new TaskReplySink();
        if (reads.Serve(new CommandInput(command, replies, deadlineMs), cache.NowMs) is { } now)
        {
            replies.Complete(now); // a short read: the caller hands its reply over
        }

        return replies;
    }

    /// <summary>The sink of a command stream that closed: nothing it is given reaches anyone.</summary>
    private sealed class ClosedStream : IReplySink
    {
        public List<Proto.Reply> Discarded { get; } = [];

        public bool Abandoned => true;

        public void Complete(Proto.Reply reply) => Discarded.Add(reply);
    }
}
