using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// WATCH as the state machine serves it: the read (applied index, liveness per key) and the watched transaction that
/// applies nothing and answers nil when a watched key changed after its read. Every change Redis 7.0.15 counts must
/// abort (a missed one would break optimistic locking); what Redis does not count must not.
/// </summary>
public sealed class WatchTests
{
    private static readonly CommandEnvelope Alone = Entries.NoSession;

    private static WatchedKey[] Watch(CacheHarness cache, params string[] keys)
    {
        var reply = cache.Machine.Watch(Entries.Keys(keys), cache.NowMs);
        Assert.Equal(CacheReplyKind.Array, reply.Kind);
        var watchedAt = (ulong)reply.Items[0].Integer;
        Assert.Equal(cache.Machine.AppliedIndex, watchedAt);
        var watches = new WatchedKey[keys.Length];
        for (var i = 0; i < keys.Length; i++)
        {
            watches[i] = new WatchedKey(Entries.B(keys[i]), watchedAt, reply.Items[i + 1].Integer == 1);
        }

        return watches;
    }

    /// <summary>EXEC of SET marker 1 under the watches: true when it applied.</summary>
    private static bool Exec(CacheHarness cache, WatchedKey[] watches)
    {
        var reply = cache.Apply(Entries.WatchedTransaction(cache.Envelope(), watches, Entries.Set(Alone, "marker", "applied")));
        if (reply.Kind == CacheReplyKind.Nil)
        {
            Assert.Null(cache.Get("marker"));
            return false;
        }

        Assert.Equal(CacheReply.FromArray([CacheReply.Ok]), reply);
        Assert.Equal("applied", cache.Get("marker"));
        cache.Delete("marker");
        return true;
    }

    public static TheoryData<string> ChangesToAPresentKey() =>
    [
        "set same value", "set other value", "incrby 0", "append empty", "expire later", "expire in the past", "persist",
        "del", "getdel", "rename away", "rename onto", "copy onto", "mset", "setrange", "getex px", "getex persist",
        "flushall", "set with past expiry", "incrbyfloat",
    ];

    [Theory]
    [MemberData(nameof(ChangesToAPresentKey))]
    public void Every_write_Redis_counts_on_a_present_key_aborts_even_one_that_leaves_the_same_value(string change)
    {
        var cache = new CacheHarness();
        cache.Set("k", "5", SetOptions.ExpiringAt(cache.NowMs + 60_000));
        cache.Set("other", "x");
        var watches = Watch(cache, "k");
        Assert.True(watches[0].WasLive);

        Action apply = change switch
        {
            "set same value" => () => cache.Set("k", "5", new SetOptions(Expiry: SetExpiry.KeepTtl)),
            "set other value" => () => cache.Set("k", "6"),
            "incrby 0" => () => cache.IncrementBy("k", 0),
            "append empty" => () => cache.Apply(Entries.Append(Alone, "k", "")),
            "expire later" => () => cache.Expire("k", cache.NowMs + 120_000),
            "expire in the past" => () => cache.Expire("k", cache.NowMs - 1),
            "persist" => () => cache.Persist("k"),
            "del" => () => cache.Delete("k"),
            "getdel" => () => cache.Apply(Entries.GetDelete(Alone, "k")),
            "rename away" => () => cache.Apply(Entries.Rename(Alone, "k", "elsewhere")),
            "rename onto" => () => cache.Apply(Entries.Rename(Alone, "other", "k")),
            "copy onto" => () => cache.Apply(Entries.Copy(Alone, "other", "k", replace: true)),
            "mset" => () => cache.MultiSet("a", "1", "k", "5"),
            "setrange" => () => cache.Apply(Entries.SetRange(Alone, "k", 0, "5")),
            "getex px" => () => cache.Apply(Entries.GetExpire(Alone, "k", GetExpiry.At, cache.NowMs + 60_000)),
            "getex persist" => () => cache.Apply(Entries.GetExpire(Alone, "k", GetExpiry.Persist)),
            "flushall" => () => cache.Apply(Entries.FlushAll(Alone)),
            "set with past expiry" => () => cache.Set("k", "5", SetOptions.ExpiringAt(cache.NowMs - 1)),
            "incrbyfloat" => () => cache.Apply(Entries.IncrementByFloat(Alone, "k", "0")),
            _ => throw new ArgumentOutOfRangeException(nameof(change)),
        };

        apply();
        Assert.False(Exec(cache, watches));
    }

    public static TheoryData<string> WritesRedisDoesNotCount() =>
    [
        "set nx fails", "expire xx fails", "expire gt fails", "persist without ttl", "setrange empty", "rename to itself",
        "copy from it", "del absent other", "writes to other keys", "getex without ttl persist", "msetnx fails",
        "rename other to itself",
    ];

    [Theory]
    [MemberData(nameof(WritesRedisDoesNotCount))]
    public void Writes_that_leave_a_present_key_untouched_let_the_transaction_apply(string write)
    {
        var cache = new CacheHarness();
        cache.Set("k", "5");
        cache.Set("other", "x");
        var watches = Watch(cache, "k");

        Action apply = write switch
        {
            "set nx fails" => () => cache.Set("k", "6", new SetOptions(Condition: SetCondition.IfAbsent)),
            "expire xx fails" => () => cache.Expire("k", cache.NowMs + 60_000, ExpireCondition.IfHasTtl),
            "expire gt fails" => () => cache.Expire("k", cache.NowMs + 60_000, ExpireCondition.IfGreater),
            "persist without ttl" => () => cache.Persist("k"),
            "setrange empty" => () => cache.Apply(Entries.SetRange(Alone, "k", 3, "")),
            "rename to itself" => () => cache.Apply(Entries.Rename(Alone, "k", "k")),
            "copy from it" => () => cache.Apply(Entries.Copy(Alone, "k", "copy")),
            "del absent other" => () => cache.Delete("absent"),
            "writes to other keys" => () => { cache.Set("other", "y"); cache.Delete("other"); cache.IncrementBy("n", 1); },
            "getex without ttl persist" => () => cache.Apply(Entries.GetExpire(Alone, "k", GetExpiry.Persist)),
            "msetnx fails" => () => cache.Apply(Entries.MultiSetIfNoneExist(Alone, "k", "9")),
            "rename other to itself" => () => cache.Apply(Entries.Rename(Alone, "other", "other")),
            _ => throw new ArgumentOutOfRangeException(nameof(write)),
        };

        apply();
        Assert.True(Exec(cache, watches));
    }

    [Fact]
    public void An_absent_key_created_or_created_and_removed_again_aborts()
    {
        foreach (var change in new Action<CacheHarness>[]
        {
            c => c.Set("k", "1"),
            c => { c.Set("k", "1"); c.Delete("k"); },
            c => { c.Set("k", "1"); c.Apply(Entries.GetDelete(Alone, "k")); },
            c => { c.Set("k", "1"); c.Apply(Entries.Rename(Alone, "k", "moved")); },
            c => { c.Set("src", "1"); c.Apply(Entries.Copy(Alone, "src", "k")); c.Delete("k"); },
            c => { c.IncrementBy("k", 1); c.Apply(Entries.FlushAll(Alone)); },
            c => { c.SetExpiringIn("k", "1", 10); c.NowMs += 20; },
            c => { c.SetExpiringIn("k", "1", 10); c.NowMs += 20; c.Purge(c.NowMs); },

            // Redis 7.0.15 counts SET with an expiry already past as touching the key, though it stays absent.
            c => c.Set("k", "1", SetOptions.ExpiringAt(c.NowMs - 1)),
        })
        {
            var cache = new CacheHarness();
            cache.Set("unrelated", "1");
            var watches = Watch(cache, "k");
            Assert.False(watches[0].WasLive);
            change(cache);
            Assert.False(Exec(cache, watches));
        }
    }

    [Fact]
    public void An_absent_key_left_absent_applies_whatever_happens_to_other_keys()
    {
        var cache = new CacheHarness();
        cache.Set("old", "1");
        var watches = Watch(cache, "k");
        cache.Set("a", "1");
        cache.Delete("absent-too");
        Assert.True(Exec(cache, watches));
    }

    [Fact]
    public void A_watched_key_that_expires_after_the_watch_aborts_purged_or_not()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "1", 100);
        var watches = Watch(cache, "k");
        Assert.True(watches[0].WasLive);
        cache.NowMs += 200;
        Assert.False(Exec(cache, watches));

        cache = new CacheHarness();
        cache.SetExpiringIn("k", "1", 100);
        watches = Watch(cache, "k");
        cache.NowMs += 200;
        cache.Purge(cache.NowMs);
        Assert.Equal(0, cache.Machine.StoredKeyCount);
        Assert.False(Exec(cache, watches));
    }

    [Fact]
    public void A_key_already_expired_at_the_watch_does_not_abort_when_it_is_purged_as_in_Redis()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "1", 100);
        cache.NowMs += 200;
        cache.Set("clock", "moves");
        var watches = Watch(cache, "k");
        Assert.False(watches[0].WasLive);
        Assert.True(Exec(cache, watches));

        watches = Watch(cache, "k");
        cache.Purge(cache.NowMs);
        Assert.Equal(CacheReply.Nil, cache.Apply(Entries.GetDelete(Alone, "k")));
        Assert.True(Exec(cache, watches));

        // But written after the watch, it counts.
        watches = Watch(cache, "k");
        cache.Set("k", "2");
        Assert.False(Exec(cache, watches));
    }

    [Fact]
    public void A_key_the_watch_saw_expired_that_is_live_when_the_transaction_applies_aborts()
    {
        // A read's time can be ahead of the stamp of an entry applied after it: a WATCH served by one leader, its EXEC
        // stamped by the next, whose clock is behind. The key was absent to the WATCH and is live again to the EXEC,
        // with no write: what the client checked (absent) no longer holds, so the transaction must not apply.
        var cache = new CacheHarness();
        cache.SetExpiringIn("k", "1", 100);
        var read = cache.Machine.Watch(Entries.Keys("k"), cache.NowMs + 200);
        WatchedKey[] watches = [new(Entries.B("k"), (ulong)read.Items[0].Integer, read.Items[1].Integer == 1)];
        Assert.False(watches[0].WasLive);
        Assert.Equal("1", cache.Get("k"));
        Assert.False(Exec(cache, watches));

        // Once the apply's time passes the expiry too, it is the purge of a key already expired at the watch: no change.
        cache.NowMs += 200;
        Assert.True(Exec(cache, watches));
    }

    [Fact]
    public void Eviction_of_a_watched_key_aborts()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 2_000 });
        cache.Set("k", "1");
        var watches = Watch(cache, "k");
        for (var i = 0; i < 20 && cache.Get("k") is not null; i++)
        {
            cache.Set("filler" + i, new string('x', 200));
        }

        Assert.Null(cache.Get("k"));
        Assert.False(Exec(cache, watches));
    }

    [Fact]
    public void Flushall_aborts_a_watched_key_that_existed_not_one_that_never_did()
    {
        var cache = new CacheHarness();
        cache.Set("k", "1");
        var watches = Watch(cache, "absent");
        cache.Apply(Entries.FlushAll(Alone));
        Assert.True(Exec(cache, watches));

        // Keys written after the watch and flushed: an absent watched key still did not change (as in Redis 7.0.15).
        watches = Watch(cache, "absent");
        cache.Set("y", "1");
        cache.Apply(Entries.FlushAll(Alone));
        Assert.True(Exec(cache, watches));
    }

    [Fact]
    public void Flushall_of_many_keys_records_the_newest_and_floors_the_rest_conservatively()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < CacheStateMachine.FlushRecordedKeys + 10; i++)
        {
            cache.Set("before" + i, "1");
        }

        var watches = Watch(cache, "absent");
        cache.Apply(Entries.FlushAll(Alone));
        Assert.True(Exec(cache, watches));

        // Written after the watch, then flushed below the newest keys FLUSHALL records one by one: the floor counts it.
        // (The key is one whose removal bucket none of the recorded keys shares, so that only the floor can abort.)
        var recordedBuckets = Enumerable.Range(10, CacheStateMachine.FlushRecordedKeys)
            .Select(i => CacheStateMachine.RemovalBucket(Entries.B("after" + i))).ToHashSet();
        var key = Enumerable.Range(0, 1000).Select(i => "k" + i).First(k => !recordedBuckets.Contains(CacheStateMachine.RemovalBucket(Entries.B(k))));
        watches = Watch(cache, key);
        cache.Set(key, "1");
        for (var i = 0; i < CacheStateMachine.FlushRecordedKeys + 10; i++)
        {
            cache.Set("after" + i, "1");
        }

        cache.Apply(Entries.FlushAll(Alone));
        Assert.False(Exec(cache, watches));
    }

    [Fact]
    public void Watches_of_different_times_are_each_checked_from_their_own_read()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        var first = Watch(cache, "a");
        cache.Set("b", "1");
        var second = Watch(cache, "b");
        Assert.True(Exec(cache, [.. first, .. second]));

        first = Watch(cache, "a");
        cache.Set("a", "2");
        second = Watch(cache, "b");
        Assert.False(Exec(cache, [.. first, .. second]));
    }

    [Fact]
    public void An_aborted_transaction_applies_nothing_and_its_retry_answers_nil_again()
    {
        var cache = new CacheHarness();
        cache.Set("k", "1");
        var watches = Watch(cache, "k");
        cache.Set("k", "2");
        var entry = Entries.WatchedTransaction(cache.Envelope(clientId: 7, sequence: 1), watches, Entries.Set(Alone, "x", "1"), Entries.Delete(Alone, "k"));
        Assert.Equal(CacheReply.Nil, cache.Apply(entry));
        Assert.Equal(CacheReply.Nil, cache.Apply(entry));
        Assert.Equal(("2", (string?)null), (cache.Get("k"), cache.Get("x")));

        // With no command, an unchanged watch answers the empty array; a changed one nil.
        watches = Watch(cache, "k");
        Assert.Equal(CacheReply.FromArray([]), cache.Apply(Entries.WatchedTransaction(cache.Envelope(), watches)));
        cache.Set("k", "3");
        Assert.Equal(CacheReply.Nil, cache.Apply(Entries.WatchedTransaction(cache.Envelope(), watches)));
    }

    [Fact]
    public void The_revision_floor_is_the_first_format_8_entry_and_watch_reads_nil_before_it()
    {
        var cache = new CacheHarness();
        var old = Entries.Set(cache.Envelope(), "k", "1");
        CacheCommand.SetFormatVersion(old, CacheCommand.TransactionVersion);
        cache.Apply(old);
        Assert.Equal(0UL, cache.Machine.RevisionFloor);
        Assert.Equal(CacheReply.Nil, cache.Machine.Watch(Entries.Keys("k"), cache.NowMs));

        cache.Apply(Entries.WatchedTransaction(cache.Envelope(), []));
        Assert.Equal(2UL, cache.Machine.RevisionFloor);
        Assert.Equal(CacheReply.FromArray([Int(2), Int(1)]), cache.Machine.Watch(Entries.Keys("k"), cache.NowMs));
        Assert.Equal(CacheCommand.WatchVersion, CacheCommand.MinimumFormatVersion(CacheCommandKind.WatchedTransaction));
    }

    [Fact]
    public void Revisions_and_removals_survive_a_snapshot_and_a_replica_that_loads_it_decides_as_the_one_that_applied()
    {
        var source = new CacheHarness();
        source.Set("k", "1");
        source.Set("gone", "1");
        var watches = Watch(source, "k", "absent", "gone");
        source.Set("k", "1");
        source.Set("absent", "1");
        source.Delete("absent");

        var loaded = Restore(source);
        Assert.Equal(source.Machine.Digest(), loaded.Machine.Digest());

        // Each watched key alone: k was rewritten, absent created and deleted, gone untouched.
        foreach (var cache in new[] { source, loaded })
        {
            Assert.False(Exec(cache, [watches[0]]));
            Assert.False(Exec(cache, [watches[1]]));
            Assert.True(Exec(cache, [watches[2]]));
        }

        Assert.Equal(source.Machine.Digest(), loaded.Machine.Digest());
    }

    [Fact]
    public void Replicas_that_started_from_snapshots_without_revisions_agree_once_the_floor_is_set()
    {
        // A build without revisions wrote everything up to the upgrade: format 7 entries, version 1 snapshots.
        var replayed = new CacheHarness();
        var entries = new List<byte[]>();
        for (var i = 0; i < 20; i++)
        {
            var entry = i % 3 == 0 ? Entries.Delete(replayed.Envelope(), "k" + (i - 3)) : Entries.Set(replayed.Envelope(), "k" + i, "v");
            CacheCommand.SetFormatVersion(entry, CacheCommand.TransactionVersion);
            entries.Add(entry);
        }

        foreach (var entry in entries[..10])
        {
            replayed.Apply(entry);
        }

        var fromSnapshot = Restore(replayed);
        Assert.Equal(CacheStateMachine.SnapshotFormatWithoutRevisions, SnapshotVersion(fromSnapshot.Machine));
        foreach (var entry in entries[10..])
        {
            replayed.Apply(entry);
            fromSnapshot.Apply(entry);
        }

        foreach (var cache in new[] { replayed, fromSnapshot })
        {
            cache.Apply(Entries.WatchedTransaction(cache.Envelope(), []));
        }

        Assert.Equal(CacheStateMachine.SnapshotFormatVersion, SnapshotVersion(replayed.Machine));
        Assert.Equal(replayed.Machine.Digest(), fromSnapshot.Machine.Digest());
        Assert.Equal(Restore(replayed).Machine.Digest(), replayed.Machine.Digest());
    }

    private static CacheHarness Restore(CacheHarness source)
    {
        using var stream = new MemoryStream();
        source.Machine.WriteSnapshot(stream);
        stream.Position = 0;
        var restored = new CacheHarness { NowMs = source.NowMs };
        restored.Machine.LoadSnapshot(stream);
        return restored;
    }

    private static byte SnapshotVersion(CacheStateMachine machine)
    {
        using var stream = new MemoryStream();
        machine.WriteSnapshot(stream);
        return stream.ToArray()[8];
    }
}
