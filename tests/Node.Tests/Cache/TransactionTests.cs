using System.Buffers;
using System.Text;
using Dcache.Cache;
using Dcache.Node.Services;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>MULTI/EXEC as the state machine applies it: one entry, its commands in order, their replies in slots.</summary>
public sealed class TransactionTests
{
    private static readonly CommandEnvelope Alone = Entries.NoSession;

    private static CacheReply Array(params CacheReply[] items) => CacheReply.FromArray(items);

    [Fact]
    public void Commands_apply_in_order_and_reads_see_the_writes_before_them()
    {
        var cache = new CacheHarness();
        cache.Set("b", "10");
        var reply = cache.Apply(Entries.Transaction(cache.Envelope(),
            Entries.Read(ReadKind.Get, "a"),
            Entries.Set(Alone, "a", "1"),
            Entries.IncrementBy(Alone, "a", 1),
            Entries.Read(ReadKind.Get, "a"),
            Entries.Read(ReadKind.MultiGet, "a", "b", "c"),
            Entries.Read(ReadKind.Exists, "a", "a", "c"),
            Entries.Delete(Alone, "b"),
            Entries.Read(ReadKind.Type, "b"),
            Entries.Read(ReadKind.Type, "a"),
            Entries.Read(ReadKind.StringLength, "a"),
            Entries.GetRange("a", 0, -1),
            Entries.Read(ReadKind.KeyCount)));

        Assert.Equal(Array(
            CacheReply.Nil, CacheReply.Ok, Int(2), Bulk("2"), Array(Bulk("2"), Bulk("10"), CacheReply.Nil), Int(2), Int(1),
            Bulk("none"), Bulk("string"), Int(1), Bulk("2"), Int(1)), reply);
        Assert.Equal("2", cache.Get("a"));
        Assert.Null(cache.Get("b"));
    }

    [Fact]
    public void Expiry_reads_answer_at_the_transactions_time()
    {
        var cache = new CacheHarness();
        var reply = cache.Apply(Entries.Transaction(cache.Envelope(),
            Entries.Set(Alone, "k", "v", SetOptions.ExpiringAt(cache.NowMs + 10_400)),
            Entries.Read(ReadKind.TimeToLiveSeconds, "k"),
            Entries.Read(ReadKind.TimeToLiveMilliseconds, "k"),
            Entries.Read(ReadKind.ExpireTimeMilliseconds, "k"),
            Entries.Read(ReadKind.ExpireTimeSeconds, "k"),
            Entries.Read(ReadKind.TimeToLiveSeconds, "absent")));

        Assert.Equal(Array(CacheReply.Ok, Int(10), Int(10_400), Int(cache.NowMs + 10_400), Int((cache.NowMs + 10_400 + 500) / 1000), Int(-2)), reply);
    }

    [Fact]
    public void A_command_that_fails_gives_its_error_in_its_slot_and_the_others_still_apply()
    {
        var cache = new CacheHarness();
        cache.Set("text", "abc");
        var reply = cache.Apply(Entries.Transaction(cache.Envelope(),
            Entries.Set(Alone, "before", "1"),
            Entries.IncrementBy(Alone, "text", 1),
            Entries.Set(Alone, "after", "2"),
            Entries.Rename(Alone, "absent", "x")));

        Assert.Equal(Array(CacheReply.Ok, Error(CacheErrors.NotAnInteger), CacheReply.Ok, Error(CacheErrors.NoSuchKey)), reply);
        Assert.Equal(("1", "abc", "2"), (cache.Get("before"), cache.Get("text"), cache.Get("after")));
    }

    [Fact]
    public void A_malformed_command_applies_none_of_the_transaction()
    {
        var cache = new CacheHarness();
        var entry = Entries.Transaction(cache.Envelope(), Entries.Set(Alone, "a", "1"), Entries.IncrementBy(Alone, "n", 1));

        // The last command's key length claims one byte more than there is.
        entry[^2]++;
        var reply = cache.Apply(entry);

        Assert.Equal(CacheReplyKind.Error, reply.Kind);
        Assert.Contains("transaction command 2", reply.ErrorMessage, StringComparison.Ordinal);
        Assert.Null(cache.Get("a"));
        Assert.Equal(1, cache.Machine.GetStatistics().MalformedEntries);
    }

    [Fact]
    public void A_retried_transaction_applies_once_and_answers_its_first_reply_again()
    {
        var cache = new CacheHarness();
        cache.Apply(Entries.RegisterSession(7, cache.NowMs));
        var entry = Entries.Transaction(cache.Envelope(7, 1) with { SessionMustExist = true },
            Entries.IncrementBy(Alone, "a", 1), Entries.IncrementBy(Alone, "b", 1), Entries.Read(ReadKind.MultiGet, "a", "b"));
        var first = cache.Apply(entry);
        var retried = cache.Apply(entry);

        Assert.Equal(Array(Int(1), Int(1), Array(Bulk("1"), Bulk("1"))), first);
        Assert.Equal(first, retried);
        Assert.Equal(("1", "1"), (cache.Get("a"), cache.Get("b")));
    }

    [Fact]
    public void Replay_and_snapshot_give_the_same_state_and_the_same_session_replies()
    {
        var entries = new List<byte[]>();
        var now = 1_000_000L;
        entries.Add(Entries.RegisterSession(9, now));
        for (ulong i = 1; i <= 20; i++)
        {
            var envelope = new CommandEnvelope(9, i, now + (long)i, SessionMustExist: true);
            entries.Add(Entries.Transaction(envelope,
                Entries.IncrementBy(Alone, "counter", (long)i),
                Entries.Set(Alone, "k" + (i % 3), "v" + i, SetOptions.ExpiringAt(now + 5 + (long)i)),
                Entries.Read(ReadKind.MultiGet, "counter", "k0", "k1", "k2"),
                Entries.Append(Alone, "log", i.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        }

        var applied = new CacheStateMachine();
        var replayed = new CacheStateMachine();
        for (var i = 0; i < entries.Count; i++)
        {
            Assert.Equal(applied.Apply((ulong)i + 1, entries[i]), replayed.Apply((ulong)i + 1, entries[i]));
        }

        using var stream = new MemoryStream();
        applied.WriteSnapshot(stream);
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(stream.ToArray()));
        Assert.Equal(applied.Digest(), replayed.Digest());
        Assert.Equal(applied.Digest(), restored.Digest());

        // The restored session still answers a retry of the last transaction with its array reply, nested MGET and all.
        var last = entries[^1];
        var expected = applied.Apply(applied.AppliedIndex + 1, last);
        Assert.Equal(CacheReplyKind.Array, expected.Kind);
        Assert.Equal(expected, restored.Apply(restored.AppliedIndex + 1, last));
        Assert.Equal(Encoding.UTF8.GetBytes("1234567891011121314151617181920"), restored.Get(Entries.B("log"), now).Bulk.ToArray());
    }

    [Fact]
    public void The_memory_cap_refuses_a_write_in_its_slot_and_the_other_commands_apply()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 1_000 });
        var reply = cache.Apply(Entries.Transaction(cache.Envelope(),
            Entries.Set(Alone, "small", "1"),
            Entries.Set(Alone, "huge", new string('x', 2_000)),
            Entries.Read(ReadKind.Exists, "small", "huge")));

        Assert.Equal(Array(CacheReply.Ok, Error(CacheErrors.OutOfMemory), Int(1)), reply);
        Assert.True(cache.Machine.UsedBytes <= 1_000);
    }

    [Fact]
    public void Reads_are_refused_alone_and_a_transaction_carries_no_transaction_or_registration()
    {
        var read = Entries.Read(ReadKind.Get, "k");
        Assert.Contains("a read outside a transaction", Assert.Throws<FormatException>(() => CacheCommand.Decode(read)).Message, StringComparison.Ordinal);

        var inner = Entries.Transaction(Alone, Entries.Set(Alone, "a", "1"));
        Assert.Throws<ArgumentException>(() => Entries.Transaction(Alone, inner));
        Assert.Throws<ArgumentException>(() => Entries.Transaction(Alone, Entries.RegisterSession(3)));
        Assert.Throws<ArgumentException>(() => Entries.Transaction(Alone));

        // Hand-made: a transaction whose command is a transaction.
        var nested = Entries.Transaction(Alone, Entries.Set(Alone, "a", "1"));
        var body = inner[19..];
        byte[] forged = [.. nested[..19], 1, (byte)(body.Length + 1), (byte)CacheCommandKind.Transaction, .. body];
        Assert.Contains("inside a transaction", Assert.Throws<FormatException>(() => CacheCommand.Decode(forged)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => Entries.Encode(w => CacheCommand.EncodeRead(w, Alone, ReadKind.Get, Entries.Keys("a", "b"))));
    }

    [Fact]
    public void An_increment_that_is_not_a_float_is_its_slots_error_as_the_leader_writes_it()
    {
        // "1\0" and "1e5000" the state machine would read as numbers (1 and infinity): the leader must not log them as sent.
        var cache = new CacheHarness();
        cache.Set("f", "1.5");
        Proto.Command IncrByFloat(string increment) => new() { IncrByFloat = new Proto.IncrByFloatRequest { Key = ByteString.CopyFromUtf8("f"), Increment = ByteString.CopyFromUtf8(increment) } };
        var transaction = new Proto.Command { Transaction = new Proto.TransactionRequest() };
        transaction.Transaction.Commands.Add(new Proto.Command { Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("a"), Value = ByteString.CopyFromUtf8("1") } });
        foreach (var increment in new[] { "abc", "1\0", "1e5000", "nan", "", "0.25" })
        {
            transaction.Transaction.Commands.Add(IncrByFloat(increment));
        }

        Assert.Null(WriteEncoder.Validate(transaction));
        var entry = new ArrayBufferWriter<byte>();
        WriteEncoder.Encode(transaction, cache.NowMs, entry);
        var reply = cache.Apply(entry.WrittenSpan.ToArray());

        var notAFloat = Error(CacheErrors.NotAFloat);
        Assert.Equal(Array(CacheReply.Ok, notAFloat, notAFloat, notAFloat, notAFloat, notAFloat, Bulk("1.75")), reply);
        Assert.Equal(("1", "1.75"), (cache.Get("a"), cache.Get("f")));
        // Alone, the command is still refused before it is proposed.
        Assert.Equal(CacheErrors.NotAFloat, WriteEncoder.Validate(IncrByFloat("1\0")));
    }
}
