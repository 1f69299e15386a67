using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Tests.Cache;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>The leader's purges of expired keys: a bounded bite each, so that no purge holds every replica's apply for long.</summary>
public sealed class ExpiryPurgeTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public void A_purge_horizon_bounds_the_keys_a_purge_removes_but_never_splits_a_millisecond()
    {
        var cache = new CacheHarness();
        var t = cache.NowMs + 1_000;
        // 10 keys expiring in each of the 100 milliseconds from t.
        for (var i = 0; i < 1_000; i++)
        {
            cache.Set("k" + i, "v", SetOptions.ExpiringAt(t + (i / 10)));
        }

        Assert.Equal(t - 500, cache.Machine.PurgeHorizon(t - 500, 5));
        Assert.False(cache.Machine.HasExpiredKeys(t - 1));
        Assert.True(cache.Machine.HasExpiredKeys(t));
        Assert.Equal(t + 50, cache.Machine.PurgeHorizon(t + 50, 1_000));
        Assert.Equal(t + 1, cache.Machine.PurgeHorizon(t + 5_000, 15));
        var removed = new List<long>();
        cache.NowMs = t + 5_000;
        while (cache.Machine.HasExpiredKeys(cache.NowMs))
        {
            removed.Add(cache.Purge(cache.Machine.PurgeHorizon(cache.NowMs, 15)).Integer);
        }

        // 15 keys reach into a millisecond's 10: each purge takes the whole millisecond, 20 keys.
        Assert.Equal(Enumerable.Repeat(20L, 50), removed);
    }

    [Fact]
    public async Task A_wave_of_keys_expiring_in_one_millisecond_is_purged_in_bounded_bites_until_none_is_left()
    {
        // The whole wave must be in before its first key expires; a machine too loaded for that within 5 s gets more.
        foreach (var marginMs in (int[])[5_000, 30_000])
        {
            if (await PurgeAWaveAsync(marginMs))
            {
                return;
            }
        }

        Assert.Fail("writing 50,000 keys took longer than 30 s every time");
    }

    /// <summary>False when writing the wave took so long that some keys had expired before the last was in.</summary>
    private static async Task<bool> PurgeAWaveAsync(int marginMs)
    {
        var disk = MemoryStorage.Bootstrap(Membership.Of([1UL]));
        var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1));
        var driver = new RaftDriver(settings, disk, new NoSnapshots(), new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance);
        var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, driver.Clocks, driver, NullLogger<PeerTransport>.Instance);
        driver.Start(transport);
        const int Keys = 50_000;
        try
        {
            // Every key in one millisecond some seconds ahead (one EXPIREAT for all: "expire every session at midnight"),
            // expired together by the time they are in.
            var expireAt = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() + marginMs;
            ulong id = 0;
            foreach (var batch in Enumerable.Range(0, Keys).Chunk(1_000))
            {
                var replies = await Task.WhenAll(batch.Select(i => driver.ExecuteAsync(new Proto.Command
                {
                    Id = ++id,
                    Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("wave:" + i), Value = ByteString.CopyFromUtf8("v"), ExpireAtMs = expireAt },
                }))).WaitAsync(Patience);
                Assert.All(replies, reply => Assert.Equal(Proto.Reply.ResultOneofCase.Ok, reply.ResultCase));
            }

            if (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() >= expireAt)
            {
                return false;
            }

            await Eventually.WaitAsync(async () => await driver.RunOnLoopAsync(_ => driver.Cache.StoredKeyCount).WaitAsync(Patience) == 0, Patience, "the expired keys to be all purged");
        }
        finally
        {
            await driver.DisposeAsync();
            await transport.DisposeAsync();
            metrics.Dispose();
        }

        // Replayed, each purge entry says how many keys it removed.
        var machine = new CacheStateMachine();
        var entries = new List<Entry>();
        Assert.Equal(LogReadStatus.Ok, disk.TryGetEntries(1, disk.LastIndex + 1, ulong.MaxValue, entries));
        var purged = new List<long>();
        foreach (var entry in entries)
        {
            if (entry.Type == EntryType.ConfChange)
            {
                machine.SkipEntry(entry.Index);
                continue;
            }

            var reply = machine.Apply(entry.Index, entry.Data.Span);
            if (!entry.Data.IsEmpty && CacheCommand.Decode(entry.Data.Span).Kind is CacheCommandKind.PurgeExpired or CacheCommandKind.PurgeExpiredThroughKey && reply.Integer > 0)
            {
                purged.Add(reply.Integer);
            }
        }

        Assert.Equal(Keys, purged.Sum());
        // No more than the bound, though the whole wave shares one millisecond.
        Assert.True(purged.Max() <= 16_384, $"one purge removed {purged.Max()} keys: {string.Join(", ", purged)}");
        Assert.True(purged.Count >= 4, $"{purged.Count} purges: {string.Join(", ", purged)}");
        return true;
    }

    [Fact]
    public async Task A_leader_elected_again_purges_though_its_purge_of_an_earlier_term_was_lost()
    {
        // Node 1 of three (nodes 2 and 3 exist only as the messages the test posts; node 1 sends nowhere). As leader of
        // term 2 it proposes a purge that never commits, behind two entries of its own; node 3 then leads term 3 with a
        // shorter log, which replaces that purge. Elected again in term 4, node 1 must purge again: its log never reaches
        // the lost purge's index without writes, so waiting for that index to apply would stop purges for good.
        var node = PeerlessNode.Start();
        var (disk, driver) = (node.Disk, node.Driver);
        void Post(Message message) => Assert.True(((IRaftInbox)driver).TryPost(message, 0));
        Task WaitFor(Func<RaftNode, bool> condition, string what) =>
            Eventually.WaitAsync(() => driver.RunOnLoopAsync(condition).WaitAsync(Patience), TimeSpan.FromSeconds(5), what);

        try
        {
            // Index 4, committed by node 2 (term 1): a key with a TTL, so that the leader has keys to purge.
            var buffer = new System.Buffers.ArrayBufferWriter<byte>();
            var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            Dcache.Node.Services.WriteEncoder.Encode(new Proto.Command
            {
                Id = 1,
                Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v"), TtlMs = 3_600_000 },
            }, now, buffer);
            var data = buffer.WrittenSpan.ToArray();
            CacheCommand.SetFormatVersion(data, CacheCommand.FormatVersion);
            Post(new Message { Type = MessageType.Append, From = 2, To = 1, Term = 1, Index = 3, LogTerm = 1, Commit = 4, Entries = [new Entry(4, 1, EntryType.Normal, data)] });
            await WaitFor(_ => driver.Cache.AppliedIndex == 4, "node 1 did not apply node 2's write");

            // Term 2: leader, its no-op at 5 and two entries of its own at 6 and 7, all in one loop round; the next tick
            // proposes a purge at 8.
            await driver.RunOnLoopAsync(raft =>
            {
                raft.Campaign();
                raft.Step(new Message { Type = MessageType.PreVoteResponse, From = 2, To = 1, Term = 2 });
                raft.Step(new Message { Type = MessageType.VoteResponse, From = 2, To = 1, Term = 2 });
                Assert.Equal(Role.Leader, raft.Role);
                Assert.True(raft.Propose(ReadOnlyMemory<byte>.Empty).Accepted);
                Assert.True(raft.Propose(ReadOnlyMemory<byte>.Empty).Accepted);
                return raft.LastIndex;
            }).WaitAsync(Patience);
            await WaitFor(raft => raft.LastIndex == 8, "node 1 did not propose a purge as leader of term 2");

            // Term 3: node 3 leads with the log up to 4 and its no-op at 5; node 1 follows, and its entries 5-8 are gone.
            Post(new Message { Type = MessageType.Append, From = 3, To = 1, Term = 3, Index = 4, LogTerm = 1, Commit = 5, Entries = [new Entry(5, 3, EntryType.Normal, ReadOnlyMemory<byte>.Empty)] });
            await WaitFor(raft => raft.Role == Role.Follower && raft.LastIndex == 5 && driver.Cache.AppliedIndex == 5, "node 1 did not follow node 3");

            // Term 4: node 1 leads again; its no-op at 6 commits with node 3's acknowledgement, and everything is applied.
            await driver.RunOnLoopAsync(raft =>
            {
                raft.Campaign();
                raft.Step(new Message { Type = MessageType.PreVoteResponse, From = 3, To = 1, Term = 4 });
                raft.Step(new Message { Type = MessageType.VoteResponse, From = 3, To = 1, Term = 4 });
                return raft.Role;
            }).WaitAsync(Patience);
            Post(new Message { Type = MessageType.AppendResponse, From = 3, To = 1, Term = 4, Index = 6 });
            await WaitFor(raft => raft.Role == Role.Leader && driver.Cache.AppliedIndex >= 6, "node 1 did not lead term 4");

            await WaitFor(_ => disk.LastIndex > 6, "node 1, leading term 4, never proposed a purge again");
            var kind = await driver.RunOnLoopAsync(_ =>
            {
                var entries = new List<Entry>();
                Assert.Equal(LogReadStatus.Ok, disk.TryGetEntries(7, 8, ulong.MaxValue, entries));
                return CacheCommand.Decode(entries[0].Data.Span).Kind;
            }).WaitAsync(Patience);
            Assert.Equal(CacheCommandKind.PurgeExpired, kind);
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    [Fact]
    public async Task While_a_member_reads_only_format_4_the_leader_purges_whole_milliseconds_and_stops_inside_one_once_every_member_reads_5()
    {
        // Node 1 of three (nodes 2 and 3 exist only as the messages and format headers the test makes up). Node 2, leading
        // term 1, gives it two waves of keys long expired by any clock of today: 20,000 that expire in one millisecond and
        // 20,000 in the next. Node 1 then leads term 2 while node 3 says its build reads format 4 only.
        const int Wave = 20_000;
        var node = PeerlessNode.Start();
        var (disk, driver) = (node.Disk, node.Driver);
        var inbox = node.Inbox;
        try
        {
            var t = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - 60_000;
            var stamped = new CommandEnvelope(CommandEnvelope.NoSession, 0, t - 60_000); // before the expiry: the keys are stored
            var last = disk.LastIndex;
            foreach (var chunk in Enumerable.Range(0, 2 * Wave).Chunk(2_000))
            {
                var previous = last;
                var entries = chunk.Select(i => new Entry(++last, 1, EntryType.Normal, Entries.Set(stamped, "wave:" + i, "v", SetOptions.ExpiringAt(i < Wave ? t : t + 1)))).ToArray();
                Assert.True(inbox.TryPost(new Message { Type = MessageType.Append, From = 2, To = 1, Term = 1, Index = previous, LogTerm = 1, Commit = last, Entries = entries }, 0));
            }

            await DriverWaits.UntilAsync(driver, _ => driver.Cache.AppliedIndex == last && driver.Cache.StoredKeyCount == 2 * Wave, "node 1 did not apply node 2's writes");

            inbox.PeerEntryFormatHeard(2, CacheCommand.FormatVersion);
            inbox.PeerEntryFormatHeard(3, 4);
            await node.LeadAsync(term: 2, voter: 2);

            // Its no-op, then a purge node 3 reads: format 4, up to the millisecond of the 16,384th key, which takes the
            // whole first wave.
            var (oldFormat, oldKind, oldHorizon, _) = await ProposedPurgeAsync(driver, disk, last + 2);
            Assert.Equal(((byte)4, CacheCommandKind.PurgeExpired, t), (oldFormat, oldKind, oldHorizon));
            inbox.PeerEntryFormatHeard(3, CacheCommand.FormatVersion);
            Assert.True(inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = last + 2 }, 0));
            await DriverWaits.UntilAsync(driver, _ => driver.Cache.AppliedIndex == last + 2, "the first purge did not apply");
            Assert.Equal(Wave, await driver.RunOnLoopAsync(_ => driver.Cache.StoredKeyCount).WaitAsync(Patience));

            // Every member reads format 5 now: the next purge stops inside the second wave's millisecond, at its 16,384th key.
            var (newFormat, newKind, newHorizon, lastKey) = await ProposedPurgeAsync(driver, disk, last + 3);
            var sorted = Enumerable.Range(Wave, Wave).Select(i => "wave:" + i).Order(StringComparer.Ordinal).ToArray();
            Assert.Equal((CacheCommand.FormatVersion, CacheCommandKind.PurgeExpiredThroughKey, t + 1, sorted[16_384 - 1]), (newFormat, newKind, newHorizon, lastKey));
            Assert.True(inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = last + 3 }, 0));
            await DriverWaits.UntilAsync(driver, _ => driver.Cache.AppliedIndex >= last + 3, "the second purge did not apply");
            Assert.Equal(Wave - 16_384, await driver.RunOnLoopAsync(_ => driver.Cache.StoredKeyCount).WaitAsync(Patience));
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    /// <summary>The format, kind, horizon and last key (as text) of the purge entry the leader proposes at <paramref name="index"/>.</summary>
    private static async Task<(byte Format, CacheCommandKind Kind, long Horizon, string LastKey)> ProposedPurgeAsync(RaftDriver driver, MemoryStorage disk, ulong index)
    {
        await DriverWaits.UntilAsync(driver, raft => raft.LastIndex >= index, $"no entry proposed at {index}");
        return await driver.RunOnLoopAsync(_ =>
        {
            var entries = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, disk.TryGetEntries(index, index + 1, ulong.MaxValue, entries));
            var data = entries[0].Data.Span;
            var purge = CacheCommand.Decode(data);
            return (data[0], purge.Kind, purge.PurgeUpToMs, System.Text.Encoding.UTF8.GetString(purge.Key));
        }).WaitAsync(Patience);
    }
}
