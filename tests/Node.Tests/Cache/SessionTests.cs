using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

public sealed class SessionTests
{
    private const ulong Client = 0xC0FFEE;

    [Fact]
    public void A_retried_write_with_the_same_sequence_returns_the_cached_reply_and_applies_once()
    {
        var cache = new CacheHarness();
        var incr = Entries.IncrementBy(cache.Envelope(Client, 1), "counter", 1);
        Assert.Equal(Int(1), cache.Apply(incr));
        Assert.Equal(Int(1), cache.Apply(incr));
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 1), "counter", 1)));
        Assert.Equal("1", cache.Get("counter"));

        Assert.Equal(Int(2), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 2), "counter", 1)));
        Assert.Equal("2", cache.Get("counter"));
    }

    [Theory]
    [InlineData("set get")]
    [InlineData("getdel")]
    public void The_cached_reply_is_the_original_even_when_the_state_changed_since(string command)
    {
        var cache = new CacheHarness();
        cache.Set("k", "v1");
        var write = command == "getdel"
            ? Entries.GetDelete(cache.Envelope(Client, 1), "k")
            : Entries.Set(cache.Envelope(Client, 1), "k", "v2", new SetOptions(ReturnOldValue: true));
        Assert.Equal(Bulk("v1"), cache.Apply(write));
        cache.Set("k", "v3");
        Assert.Equal(Bulk("v1"), cache.Apply(write));
        Assert.Equal("v3", cache.Get("k"));
    }

    [Fact]
    public void A_reply_too_large_to_keep_is_kept_as_an_error_saying_the_write_applied()
    {
        var cache = new CacheHarness();
        var large = new string('v', (int)CacheStateMachine.MaxKeptReplyBytes);
        cache.Set("k", large);
        var getdel = Entries.GetDelete(cache.Envelope(Client, 1), "k");
        Assert.Equal(Bulk(large), cache.Apply(getdel));
        Assert.Equal(Error(CacheErrors.ReplyNotKept), cache.Apply(getdel));
        Assert.Null(cache.Get("k"));

        // A reply that fits is kept whole.
        cache.Set("small", "v");
        var small = Entries.GetDelete(cache.Envelope(Client, 2), "small");
        Assert.Equal(Bulk("v"), cache.Apply(small));
        Assert.Equal(Bulk("v"), cache.Apply(small));
    }

    [Fact]
    public void A_transaction_reading_one_large_value_many_times_leaves_the_snapshot_its_data_size()
    {
        // Its reply shares one value array 1,000 times in memory, but a snapshot writes each item in full: 64 MB for a
        // 64 KiB value, on every replica, until the session expired.
        var cache = new CacheHarness();
        cache.Set("big", new string('b', 64 * 1024));
        var reads = Enumerable.Range(0, 1_000).Select(_ => Entries.Read(ReadKind.Get, "big")).ToArray();
        var exec = Entries.Transaction(cache.Envelope(Client, 1), reads);
        Assert.Equal(1_000, cache.Apply(exec).Items.Count);
        Assert.Equal(Error(CacheErrors.ReplyNotKept), cache.Apply(exec));

        using var snapshot = new MemoryStream();
        cache.Machine.WriteSnapshot(snapshot);
        Assert.True(snapshot.Length < 2 * 64 * 1024, $"{snapshot.Length} bytes of snapshot for 64 KiB of data");
    }

    [Fact]
    public void An_entry_of_format_8_keeps_its_reply_whole_as_it_always_did()
    {
        // Replicated state: an old log (or a leader writing format 8 during a rolling upgrade) must replay the same.
        var cache = new CacheHarness();
        var large = new string('v', (int)CacheStateMachine.MaxKeptReplyBytes);
        cache.Set("k", large);
        var getdel = Entries.GetDelete(cache.Envelope(Client, 1), "k");
        CacheCommand.SetFormatVersion(getdel, (byte)(CacheCommand.KeptReplyLimitVersion - 1));
        Assert.Equal(Bulk(large), cache.Apply(getdel));
        Assert.Equal(Bulk(large), cache.Apply(getdel));
    }

    [Fact]
    public void A_session_write_numbered_0_is_malformed_not_answered_as_the_registrations_retry()
    {
        var cache = new CacheHarness();
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.RegisterSession(Client)));
        var reply = cache.Apply(Entries.Set(cache.Envelope(Client, 0), "k", "v"));
        Assert.True(reply.IsError && reply.ErrorMessage.StartsWith(CacheErrors.MalformedEntryPrefix, StringComparison.Ordinal), reply.ToString());
        Assert.Null(cache.Get("k"));

        // Format 8 answered it from the registration, OK, and applied nothing: kept, so an old log replays the same.
        var old = Entries.Set(cache.Envelope(Client, 0), "k", "v");
        CacheCommand.SetFormatVersion(old, (byte)(CacheCommand.KeptReplyLimitVersion - 1));
        Assert.Equal(CacheReply.Ok, cache.Apply(old));
        Assert.Null(cache.Get("k"));
    }

    [Fact]
    public void A_session_write_numbered_0_is_refused_before_it_is_proposed()
    {
        var set = new Dcache.Protocol.Cache.Command { ClientId = Client, Sequence = 0, Set = new Dcache.Protocol.Cache.SetRequest { Key = Google.Protobuf.ByteString.CopyFromUtf8("k"), Value = Google.Protobuf.ByteString.CopyFromUtf8("v") } };
        Assert.Equal("a session's writes are numbered from 1 (0 is its registration)", Dcache.Node.Services.WriteEncoder.Validate(set));
        set.Sequence = 1;
        Assert.Null(Dcache.Node.Services.WriteEncoder.Validate(set));
        Assert.Null(Dcache.Node.Services.WriteEncoder.Validate(new Dcache.Protocol.Cache.Command { ClientId = Client, Sequence = 0, RegisterSession = new Dcache.Protocol.Cache.RegisterSessionRequest() }));
    }

    [Fact]
    public void Errors_are_cached_too()
    {
        var cache = new CacheHarness();
        cache.Set("k", "text");
        var incr = Entries.IncrementBy(cache.Envelope(Client, 1), "k", 1);
        Assert.Equal(Error(CacheErrors.NotAnInteger), cache.Apply(incr));
        cache.Set("k", "5");
        Assert.Equal(Error(CacheErrors.NotAnInteger), cache.Apply(incr));
        Assert.Equal("5", cache.Get("k"));
    }

    [Fact]
    public void A_lower_sequence_gets_a_stale_session_error_and_applies_nothing()
    {
        var cache = new CacheHarness();
        cache.Apply(Entries.Set(cache.Envelope(Client, 1), "k", "one"));
        cache.Apply(Entries.Set(cache.Envelope(Client, 5), "k", "five"));
        Assert.Equal(Error(CacheErrors.StaleSessionSequence), cache.Apply(Entries.Set(cache.Envelope(Client, 4), "k", "four")));
        Assert.Equal("five", cache.Get("k"));
    }

    [Fact]
    public void Sequences_may_skip_and_the_first_write_of_a_client_creates_its_session()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1)));
        Assert.Equal(Int(2), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 100), "n", 1)));
        Assert.Equal(Int(3), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 205), "n", 1)));
        Assert.Equal(1, cache.Machine.SessionCount);
    }

    [Fact]
    public void A_write_past_the_first_sequence_of_a_session_the_cache_does_not_know_is_refused_and_starts_nothing()
    {
        var cache = new CacheHarness();
        Assert.Equal(Error(CacheErrors.SessionExpired), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 2), "n", 1)));
        Assert.False(cache.Machine.TryGet(Entries.B("n"), cache.NowMs, out _));
        Assert.Equal(0, cache.Machine.SessionCount);
    }

    [Fact]
    public void A_retry_after_its_session_expired_is_refused_rather_than_applied_twice()
    {
        // E.g. a newly elected leader whose clock runs an hour ahead ages every session past the timeout at once,
        // while the gateway retries a write the old leader had applied.
        var cache = new CacheHarness(new CacheStateMachineOptions { SessionTimeout = TimeSpan.FromSeconds(10) });
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1)));
        var second = Entries.IncrementBy(cache.Envelope(Client, 2), "n", 1);
        Assert.Equal(Int(2), cache.Apply(second));
        cache.NowMs += 3_600_000;
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "1"));
        Assert.Equal(0, cache.Machine.SessionCount);

        Assert.Equal(Error(CacheErrors.SessionExpired), cache.Apply(second));
        Assert.Equal("2", cache.Get("n"));
    }

    [Fact]
    public void SetFormatVersion_marks_an_entry_and_refuses_versions_and_bytes_it_does_not_know()
    {
        var entry = Entries.IncrementBy(new CommandEnvelope(Client, 7, 1), "n", 1);
        Assert.Equal(CacheCommand.FormatVersion, entry[0]);
        CacheCommand.SetFormatVersion(entry, 1);
        Assert.Equal(1, entry[0]);
        Assert.False(CacheCommand.Decode(entry).RequiresKnownSession);
        CacheCommand.SetFormatVersion(entry, 2);
        Assert.True(CacheCommand.Decode(entry).RequiresKnownSession);
        CacheCommand.SetFormatVersion(entry, 3);
        Assert.True(CacheCommand.Decode(entry).RequiresKnownSession);
        // Format 4 changed no cache entry: only the log around them (a membership change that moves a member).
        CacheCommand.SetFormatVersion(entry, 4);
        Assert.Equal(entry.AsSpan(1).ToArray(), Entries.IncrementBy(new CommandEnvelope(Client, 7, 1), "n", 1).AsSpan(1).ToArray());
        Assert.True(CacheCommand.Decode(entry).RequiresKnownSession);
        CacheCommand.SetFormatVersion(entry, 5);
        Assert.True(CacheCommand.Decode(entry).RequiresKnownSession);
        Assert.Throws<ArgumentOutOfRangeException>(() => CacheCommand.SetFormatVersion(entry, CacheCommand.FormatVersion + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CacheCommand.SetFormatVersion(entry, 0));
        Assert.Throws<ArgumentException>(() => CacheCommand.SetFormatVersion([CacheCommand.FormatVersion + 1, 1, 2], 1));
    }

    [Fact]
    public void The_retry_of_a_first_write_after_its_session_expired_is_refused_when_it_says_the_session_must_exist()
    {
        // The gateway marks a retry whose earlier attempt may have applied. Sequence 1 alone cannot tell "a new
        // session" from "the retry of a new session's first write whose session has expired since".
        var cache = new CacheHarness(new CacheStateMachineOptions { SessionTimeout = TimeSpan.FromSeconds(10) });
        var first = Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1);
        Assert.Equal(Int(1), cache.Apply(first));
        cache.NowMs += 3_600_000;
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "1"));
        Assert.Equal(0, cache.Machine.SessionCount);

        var retry = Entries.IncrementBy(new CommandEnvelope(Client, 1, cache.NowMs, SessionMustExist: true), "n", 1);
        Assert.True(CacheCommand.Decode(retry).Envelope.SessionMustExist);
        Assert.Equal(Error(CacheErrors.SessionExpired), cache.Apply(retry));
        Assert.Equal("1", cache.Get("n"));
        Assert.Equal(0, cache.Machine.SessionCount);

        // Unmarked, the same bytes start a new session: what the mark is for.
        Assert.Equal(Int(2), cache.Apply(first));
    }

    [Fact]
    public void A_marked_retry_whose_session_exists_returns_the_cached_reply()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1)));
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(new CommandEnvelope(Client, 1, cache.NowMs, SessionMustExist: true), "n", 1)));
        Assert.Equal(Int(2), cache.Apply(Entries.IncrementBy(new CommandEnvelope(Client, 2, cache.NowMs, SessionMustExist: true), "n", 1)));
        Assert.Equal("2", cache.Get("n"));
    }

    [Fact]
    public void An_older_format_drops_the_session_must_exist_mark_and_does_not_accept_it()
    {
        // During a rolling upgrade the leader writes version 2 for members that do not read 3: they get the entry as
        // before, without the mark, which they would not understand.
        var entry = Entries.IncrementBy(new CommandEnvelope(Client, 1, 1, SessionMustExist: true), "n", 1);
        CacheCommand.SetFormatVersion(entry, 2);
        Assert.False(CacheCommand.Decode(entry).Envelope.SessionMustExist);
        CacheCommand.SetFormatVersion(entry, 3);
        Assert.False(CacheCommand.Decode(entry).Envelope.SessionMustExist);

        var marked = Entries.IncrementBy(new CommandEnvelope(Client, 1, 1, SessionMustExist: true), "n", 1);
        marked[0] = 2;
        Assert.Throws<FormatException>(() => CacheCommand.Decode(marked));
    }

    [Fact]
    public void A_registered_session_takes_marked_writes_from_its_first_and_refuses_their_retries_once_it_expired()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { SessionTimeout = TimeSpan.FromSeconds(10) });
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.RegisterSession(Client, cache.NowMs)));
        Assert.Equal(1, cache.Machine.SessionCount);

        var first = Entries.IncrementBy(new CommandEnvelope(Client, 1, cache.NowMs, SessionMustExist: true), "n", 1);
        Assert.Equal(Int(1), cache.Apply(first));
        Assert.Equal(Int(1), cache.Apply(first)); // a retry: the cached reply

        cache.NowMs += 3_600_000;
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "1"));
        Assert.Equal(Error(CacheErrors.SessionExpired), cache.Apply(first));
        Assert.Equal("1", cache.Get("n"));
    }

    [Fact]
    public void Registering_a_session_again_changes_nothing()
    {
        var cache = new CacheHarness();
        cache.Apply(Entries.RegisterSession(Client, cache.NowMs));
        var first = Entries.IncrementBy(new CommandEnvelope(Client, 1, cache.NowMs, SessionMustExist: true), "n", 1);
        Assert.Equal(Int(1), cache.Apply(first));
        Assert.Equal(CacheReply.Ok, cache.Apply(Entries.RegisterSession(Client, cache.NowMs)));
        Assert.Equal(Int(1), cache.Apply(first));
        Assert.Equal("1", cache.Get("n"));
        Assert.Equal(1, cache.Machine.SessionCount);
    }

    [Fact]
    public void A_registration_exists_only_from_format_3_and_needs_a_client_id()
    {
        var registration = Entries.RegisterSession(Client);
        Assert.Equal(CacheCommandKind.RegisterSession, CacheCommand.Decode(registration).Kind);
        Assert.Throws<ArgumentException>(() => CacheCommand.SetFormatVersion(registration, 2));
        registration[0] = 2;
        Assert.Throws<FormatException>(() => CacheCommand.Decode(registration));
        Assert.Throws<ArgumentException>(() => Entries.RegisterSession(CommandEnvelope.NoSession));
    }

    [Fact]
    public void The_mark_means_nothing_without_a_session()
    {
        var entry = Entries.IncrementBy(new CommandEnvelope(CommandEnvelope.NoSession, 0, 1, SessionMustExist: true), "n", 1);
        Assert.False(CacheCommand.Decode(entry).Envelope.SessionMustExist);
        Assert.Equal(Int(1), new CacheHarness().Apply(entry));
    }

    [Fact]
    public void A_format_version_1_entry_keeps_its_old_meaning_an_unknown_session_is_started()
    {
        // Logs written before version 2 must replay exactly as they first applied.
        var cache = new CacheHarness();
        var entry = Entries.IncrementBy(cache.Envelope(Client, 7), "n", 1);
        CacheCommand.SetFormatVersion(entry, 1);
        Assert.Equal(Int(1), cache.Apply(entry));
        Assert.Equal(1, cache.Machine.SessionCount);
        Assert.Equal(Int(1), cache.Apply(entry));
    }

    [Fact]
    public void Sessions_are_per_client()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(1), cache.Apply(Entries.IncrementBy(cache.Envelope(1, 1), "n", 1)));
        Assert.Equal(Int(2), cache.Apply(Entries.IncrementBy(cache.Envelope(2, 1), "n", 1)));
        Assert.Equal(Int(2), cache.Apply(Entries.IncrementBy(cache.Envelope(2, 1), "n", 1)));
        Assert.Equal(2, cache.Machine.SessionCount);
    }

    [Fact]
    public void Writes_without_a_session_are_never_deduplicated()
    {
        var cache = new CacheHarness();
        var incr = Entries.IncrementBy(cache.Envelope(), "n", 1);
        cache.Apply(incr);
        Assert.Equal(Int(2), cache.Apply(incr));
        Assert.Equal(0, cache.Machine.SessionCount);
    }

    [Fact]
    public void An_idle_session_expires_by_stamped_time_and_a_retry_of_its_first_write_after_that_applies_again()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { SessionTimeout = TimeSpan.FromSeconds(10) });
        var incr = Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1);
        cache.Apply(incr);

        cache.NowMs += 10_000; // exactly the timeout: still alive
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "1"));
        Assert.Equal(1, cache.Machine.SessionCount);

        cache.NowMs += 10_001; // now past last activity + timeout: dropped when this entry applies
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "2"));
        Assert.Equal(0, cache.Machine.SessionCount);
        Assert.Equal(Int(2), cache.Apply(incr));
    }

    [Fact]
    public void Activity_including_retries_keeps_a_session_alive_and_others_expire_oldest_first()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { SessionTimeout = TimeSpan.FromSeconds(10) });
        for (ulong client = 1; client <= 5; client++)
        {
            cache.Apply(Entries.Set(cache.Envelope(client, 1), "k" + client, "v"));
            cache.NowMs += 1_000;
        }

        // Client 1 retries at t0+5s, which counts as activity.
        cache.Apply(Entries.Set(cache.Envelope(1, 1), "k1", "v"));
        cache.NowMs += 7_500; // t0 + 12.5 s: clients 2 (t0+1) and 3 (t0+2) are idle > 10 s
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "1"));
        Assert.Equal(3, cache.Machine.SessionCount);

        cache.NowMs += 10_000;
        cache.Apply(Entries.Set(cache.Envelope(), "tick", "2"));
        Assert.Equal(0, cache.Machine.SessionCount);
    }

    [Fact]
    public void Sessions_survive_a_snapshot_and_still_deduplicate()
    {
        var cache = new CacheHarness();
        var incr = Entries.IncrementBy(cache.Envelope(Client, 1), "n", 1);
        cache.Apply(incr);
        using var snapshot = new MemoryStream();
        cache.Machine.WriteSnapshot(snapshot);
        snapshot.Position = 0;
        var restored = CacheStateMachine.FromSnapshot(snapshot);
        Assert.Equal(Int(1), restored.Apply(cache.Machine.AppliedIndex + 1, incr));
        Assert.True(restored.TryGet(Entries.B("n"), cache.NowMs, out var value));
        Assert.Equal("1"u8.ToArray(), value.ToArray());
    }
}
