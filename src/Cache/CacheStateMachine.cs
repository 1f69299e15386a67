using System.Globalization;

namespace Dcache.Cache;

/// <summary>
/// The replicated cache: every node applies the same committed Raft entries, in log order, to one of these and ends in the
/// same state. Deterministic by construction — no local clock, random number or hash order influences what
/// <see cref="Apply"/> does:
/// <list type="bullet">
/// <item>"now" is the leader's timestamp in the entry, made monotonic (the machine's clock is the largest timestamp seen so
/// far, so a new leader with a slower clock cannot bring expired keys back).</item>
/// <item>Eviction under the memory cap follows write order (least recently written first), which the log fixes.</item>
/// <item>Client sessions expire by that same clock, oldest activity first.</item>
/// </list>
/// Single-threaded: <see cref="Apply"/>, <see cref="LoadSnapshot"/> and anything else that changes state must not run
/// concurrently with anything. Reads (<see cref="TryGet"/>, <see cref="TimeToLiveMs"/>, ...) change no state apart from
/// atomically updated hit/miss counters, so several may run at once as long as no write runs with them.
/// </summary>
public sealed partial class CacheStateMachine
{
    private readonly long _memoryCapBytes;
    private readonly long _sessionTimeoutMs;

    // Replicated state. Not readonly: LoadSnapshot swaps in a fully loaded set at once.
    private Dictionary<byte[], CacheEntry> _entries;
    private Dictionary<byte[], CacheEntry>.AlternateLookup<ReadOnlySpan<byte>> _entriesBySpan;
    private SortedSet<CacheEntry> _expiryIndex;

    // Local: RANDOMKEY's sample of the keys. Replaced with the keys (FLUSHALL, snapshot loads).
    private RandomKeySample _randomKeys;
    private CacheEntry? _oldestWritten;
    private CacheEntry? _newestWritten;
    private long _usedBytes;
    private Dictionary<ulong, ClientSession> _sessions;
    private ClientSession? _leastRecentSession;
    private ClientSession? _mostRecentSession;
    private long _clockMs;
    private ulong _appliedIndex;
    private byte _newestFormatApplied;

    // Local bookkeeping: never decides anything replicated.
    private long _evictedKeys;
    private long _expiredKeys;
    private long _hits;
    private long _misses;
    private long _malformedEntries;
    private long _writeSequence;

    /// <summary>
    /// The largest reply a session keeps whole for a retry, counted as a snapshot writes it (<see cref="KeptSize"/>):
    /// replicated state, so a constant, never a setting.
    /// </summary>
    public const long MaxKeptReplyBytes = 64 * 1024;

    public CacheStateMachine(CacheStateMachineOptions? options = null)
    {
        Options = options ?? new CacheStateMachineOptions();
        Options.Validate();
        _memoryCapBytes = Options.MemoryCapBytes;
        _sessionTimeoutMs = (long)Options.SessionTimeout.TotalMilliseconds;
        _entries = new Dictionary<byte[], CacheEntry>(ByteKeyComparer.CreateRandomized());
        _entriesBySpan = _entries.GetAlternateLookup<ReadOnlySpan<byte>>();
        _expiryIndex = new SortedSet<CacheEntry>(ExpiryOrder.Instance);
        _randomKeys = new RandomKeySample();
        _sessions = [];
    }

    public CacheStateMachineOptions Options { get; }

    /// <summary>The index of the last entry applied (or skipped); 0 before the first.</summary>
    public ulong AppliedIndex => _appliedIndex;

    /// <summary>The largest leader timestamp applied so far (unix ms): the state machine's notion of "now".</summary>
    public long ClockMs => _clockMs;

    /// <summary>Keys stored, including expired ones not yet purged (reads hide those; see <see cref="CountKeys"/>).</summary>
    public int StoredKeyCount => _entries.Count;

    /// <summary>Charged memory: the sum over keys of key + value + <see cref="CacheEntry.OverheadBytes"/>.</summary>
    public long UsedBytes => _usedBytes;

    public int SessionCount => _sessions.Count;

    /// <summary>
    /// The newest log entry format this replica knows the log to hold: the newest it applied since it started, or, from a
    /// snapshot, format <see cref="CacheCommand.WatchVersion"/> once revisions had started. Every member reads it, since
    /// one that does not cannot follow the log: a leader may count a member it has not heard from as reading it.
    /// Not replicated state (replicas restarted from different snapshots may know different values).
    /// </summary>
    public byte NewestFormatApplied => Math.Max(_newestFormatApplied, _revisionFloor > 0 ? CacheCommand.WatchVersion : (byte)0);

    /// <summary>
    /// Applies one committed entry and returns the reply for the client that proposed it.
    /// An empty entry (the leader's no-op) only advances the applied index.
    /// A malformed entry changes nothing but the applied index and returns an error reply — the same on every replica, since
    /// they all hold the same bytes — while an entry in an unknown format version throws
    /// <see cref="UnsupportedCommandVersionException"/> without advancing: this build cannot apply it the way a newer one
    /// would, and must stop rather than diverge.
    /// </summary>
    public CacheReply Apply(ulong index, ReadOnlySpan<byte> entryData)
    {
        RequireNextIndex(index);
        if (entryData.IsEmpty)
        {
            _appliedIndex = index;
            return CacheReply.Ok;
        }

        CacheCommand command;
        try
        {
            command = CacheCommand.Decode(entryData);
        }
        catch (UnsupportedCommandVersionException)
        {
            throw;
        }
        catch (FormatException e)
        {
            _appliedIndex = index;
            _malformedEntries++;
            return CacheReply.FromError("ERR " + e.Message);
        }

        _appliedIndex = index;
        NoteRevisionFloor(index, command.ReadVersion);
        _newestFormatApplied = Math.Max(_newestFormatApplied, command.ReadVersion);
        var envelope = command.Envelope;
        var now = Math.Max(_clockMs, envelope.NowMs);
        _clockMs = now;
        ExpireIdleSessions(now);

        if (!envelope.HasSession)
        {
            return Execute(command, now);
        }

        if (command.Kind == CacheCommandKind.RegisterSession)
        {
            return RegisterSession(envelope.ClientId, now);
        }

        if (_sessions.TryGetValue(envelope.ClientId, out var session))
        {
            if (envelope.Sequence == session.LastSequence)
            {
                TouchSession(session, now);
                return session.LastReply;
            }

            if (envelope.Sequence < session.LastSequence)
            {
                TouchSession(session, now);
                return CacheReply.FromError(CacheErrors.StaleSessionSequence);
            }
        }
        else if (envelope.SessionMustExist || (command.RequiresKnownSession && envelope.Sequence > 1))
        {
            // Its earlier writes were forgotten with the session (or, with SessionMustExist, an earlier attempt of this
            // very write may have started the session and applied): this may be the retry of a write that applied.
            return CacheReply.FromError(CacheErrors.SessionExpired);
        }
        else
        {
            session = new ClientSession(envelope.ClientId);
            _sessions.Add(envelope.ClientId, session);
        }

        var reply = Execute(command, now);
        session.LastSequence = envelope.Sequence;
        session.LastReply = command.KeepsLargeRepliesAsErrors && !FitsToKeep(reply) ? CacheReply.FromError(CacheErrors.ReplyNotKept) : reply;
        TouchSession(session, now);
        return reply;
    }

    private static bool FitsToKeep(CacheReply reply)
    {
        var budget = MaxKeptReplyBytes;
        return KeptSize(reply, ref budget);
    }

    /// <summary>
    /// Takes the bytes a snapshot would write for <paramref name="reply"/> (each item in full, shared value or not) out of
    /// <paramref name="budget"/>; false once it runs out, without walking the rest (an array may hold millions of items).
    /// </summary>
    private static bool KeptSize(CacheReply reply, ref long budget)
    {
        budget -= 1 + reply.Kind switch
        {
            CacheReplyKind.Integer => 8,
            CacheReplyKind.Bulk => 5 + reply.Bulk.Length,
            CacheReplyKind.Error => 5 + System.Text.Encoding.UTF8.GetByteCount(reply.ErrorMessage),
            CacheReplyKind.Array => 5,
            _ => 0,
        };
        if (budget < 0)
        {
            return false;
        }

        foreach (var item in reply.Items)
        {
            if (!KeptSize(item, ref budget))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Advances the applied index past an entry that is not a cache command (e.g. a membership change).</summary>
    public void SkipEntry(ulong index)
    {
        RequireNextIndex(index);
        _appliedIndex = index;
    }

    public CacheStatistics GetStatistics() => new(
        AppliedIndex: _appliedIndex,
        Keys: _entries.Count,
        KeysWithExpiry: _expiryIndex.Count,
        UsedBytes: _usedBytes,
        MemoryCapBytes: _memoryCapBytes,
        Sessions: _sessions.Count,
        EvictedKeys: _evictedKeys,
        ExpiredKeys: _expiredKeys,
        Hits: Interlocked.Read(ref _hits),
        Misses: Interlocked.Read(ref _misses),
        MalformedEntries: _malformedEntries,
        ClockMs: _clockMs);

    private void RequireNextIndex(ulong index)
    {
        // A gap would leave this replica without an entry every other applied: it would diverge without a sign, so it is
        // refused like a repeat (the node then stops rather than serve a state no other replica has).
        if (index != _appliedIndex + 1)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Entry {index} does not follow the applied index {_appliedIndex}: entries must be applied once each, in log order, none skipped."));
        }
    }

    private CacheReply Execute(in CacheCommand command, long now)
    {
        var reply = command.Kind switch
        {
            CacheCommandKind.Set => ApplySet(command.Key, command.Value, command.SetOptions, now),
            CacheCommandKind.Delete => ApplyDelete(command.Keys, now),
            CacheCommandKind.Expire => ApplyExpire(command.Key, command.ExpireAtMs, command.ExpireCondition, now),
            CacheCommandKind.Persist => ApplyPersist(command.Key, now),
            CacheCommandKind.IncrementBy => ApplyIncrementBy(command.Key, command.Delta, now),
            CacheCommandKind.MultiSet => ApplyMultiSet(command.Pairs, ifNoneExist: false, now),
            CacheCommandKind.MultiSetIfNoneExist => ApplyMultiSet(command.Pairs, ifNoneExist: true, now),
            CacheCommandKind.GetDelete => ApplyGetDelete(command.Key, now),
            CacheCommandKind.GetExpire => ApplyGetExpire(command.Key, command.GetExpiry, command.ExpireAtMs, now),
            CacheCommandKind.Append => ApplyAppend(command.Key, command.Value, StringTooLongText(command), now),
            CacheCommandKind.SetRange => ApplySetRange(command.Key, command.Offset, command.Value, StringTooLongText(command), now),
            CacheCommandKind.Copy => ApplyCopy(command.Key, command.Destination, command.Replace, now),
            CacheCommandKind.IncrementByFloat => ApplyIncrementByFloat(command.Key, command.FloatIncrement, now),
            CacheCommandKind.FlushAll => ApplyFlushAll(),
            CacheCommandKind.Rename or CacheCommandKind.RenameIfAbsent => ApplyRename(command.Key, command.Destination, command.Kind == CacheCommandKind.RenameIfAbsent, now),
            CacheCommandKind.PurgeExpired => CacheReply.FromInteger(PurgeExpiredUpTo(Math.Min(command.PurgeUpToMs, now))),
            CacheCommandKind.PurgeExpiredThroughKey => CacheReply.FromInteger(command.PurgeUpToMs <= now
                ? PurgeExpiredThrough(command.PurgeUpToMs, command.Key)
                : PurgeExpiredUpTo(now)),
            CacheCommandKind.Transaction => ApplyTransaction(command.Commands, now),
            CacheCommandKind.WatchedTransaction => ApplyWatchedTransaction(command, now),
            CacheCommandKind.Read => ApplyRead(command, now),
            _ => throw new InvalidOperationException("Decode admitted an unknown command kind."),
        };

        EnforceMemoryCap(now, command.ReclaimsExpiredOnlyAsNeeded);
        return reply;
    }

    /// <summary>
    /// MULTI/EXEC: every command in order, in this one apply, so no other entry's effect lands between them on any
    /// replica. Each keeps its own reply (an error stays in its slot and the others still apply, as in Redis), and the
    /// memory cap is enforced after each as it would be after each command alone.
    /// </summary>
    private CacheReply ApplyTransaction(CacheCommand.CommandList commands, long now)
    {
        var replies = new CacheReply[commands.Count];
        var i = 0;
        foreach (var command in commands)
        {
            replies[i++] = Execute(command, now);
        }

        return CacheReply.FromArray(replies);
    }

    /// <summary>A read inside a transaction, answered as of the transaction's time, between its writes.</summary>
    private CacheReply ApplyRead(in CacheCommand command, long now)
    {
        switch (command.ReadKind)
        {
            case ReadKind.Get:
                return Get(command.Key, now);
            case ReadKind.MultiGet:
                {
                    var items = new CacheReply[command.Count];
                    var i = 0;
                    foreach (var key in command.Keys)
                    {
                        items[i++] = Get(key, now);
                    }

                    return CacheReply.FromArray(items);
                }

            case ReadKind.Exists:
                {
                    long count = 0;
                    foreach (var key in command.Keys)
                    {
                        count += ContainsKey(key, now) ? 1 : 0;
                    }

                    return CacheReply.FromInteger(count);
                }

            case ReadKind.TimeToLiveSeconds:
                return CacheReply.FromInteger(TimeToLiveSeconds(command.Key, now));
            case ReadKind.TimeToLiveMilliseconds:
                return CacheReply.FromInteger(TimeToLiveMs(command.Key, now));
            case ReadKind.ExpireTimeSeconds:
                return CacheReply.FromInteger(ExpireTime(command.Key, now, milliseconds: false));
            case ReadKind.ExpireTimeMilliseconds:
                return CacheReply.FromInteger(ExpireTime(command.Key, now, milliseconds: true));
            case ReadKind.StringLength:
                return CacheReply.FromInteger(StringLength(command.Key, now));
            case ReadKind.GetRange:
                return GetRange(command.Key, command.RangeStart, command.RangeEnd, now);
            case ReadKind.Type:
                return CacheReply.FromBulk(ContainsKey(command.Key, now) ? "string"u8.ToArray() : "none"u8.ToArray());
            case ReadKind.KeyCount:
                return CacheReply.FromInteger(CountKeys(now));
            default:
                throw new InvalidOperationException("Decode admitted an unknown read kind.");
        }
    }

    private CacheReply ApplySet(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, SetOptions options, long now)
    {
        var existing = FindLiveForWrite(key, now);
        var previous = existing is null ? CacheReply.Nil : CacheReply.FromBulk(existing.Value);
        if ((options.Condition == SetCondition.IfAbsent && existing is not null)
            || (options.Condition == SetCondition.IfPresent && existing is null))
        {
            // Not set: plain SET NX/XX answers nil; with GET, Redis 7 still returns the current value.
            return options.ReturnOldValue ? previous : CacheReply.Nil;
        }

        var reply = options.ReturnOldValue ? previous : CacheReply.Ok;
        var expireAt = options.Expiry switch
        {
            SetExpiry.At => options.ExpireAtMs,
            SetExpiry.KeepTtl => existing?.ExpireAtMs ?? CacheEntry.NoExpiry,
            _ => CacheEntry.NoExpiry,
        };

        if (expireAt <= now)
        {
            // Redis stores the key and it is expired at once: the same as removing it.
            if (existing is not null)
            {
                RemoveEntry(existing);
                _expiredKeys++;
            }
            else
            {
                NoteTouchedWhileAbsent(key);
            }

            return reply;
        }

        if (!FitsUnderCap(CacheEntry.ChargeFor(key.Length, value.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        Write(existing, key, CopyValue(value), expireAt);
        return reply;
    }

    private CacheReply ApplyDelete(CacheCommand.KeyList keys, long now)
    {
        long removed = 0;
        foreach (var key in keys)
        {
            var entry = FindLiveForWrite(key, now);
            if (entry is not null)
            {
                RemoveEntry(entry);
                removed++;
            }
        }

        return CacheReply.FromInteger(removed);
    }

    private CacheReply ApplyExpire(ReadOnlySpan<byte> key, long expireAtMs, ExpireCondition condition, long now)
    {
        var entry = FindLiveForWrite(key, now);
        if (entry is null)
        {
            return CacheReply.FromInteger(0);
        }

        // Redis 7 expireGenericCommand: a key without TTL counts as an infinite TTL for GT and LT.
        var hasTtl = entry.HasExpiry;
        if (((condition & ExpireCondition.IfNoTtl) != 0 && hasTtl)
            || ((condition & ExpireCondition.IfHasTtl) != 0 && !hasTtl)
            || ((condition & ExpireCondition.IfGreater) != 0 && (!hasTtl || expireAtMs <= entry.ExpireAtMs))
            || ((condition & ExpireCondition.IfLess) != 0 && hasTtl && expireAtMs >= entry.ExpireAtMs))
        {
            return CacheReply.FromInteger(0);
        }

        if (expireAtMs <= now)
        {
            RemoveEntry(entry);
            _expiredKeys++;
        }
        else
        {
            MarkWritten(entry);
            ChangeExpiry(entry, expireAtMs);
        }

        return CacheReply.FromInteger(1);
    }

    private CacheReply ApplyPersist(ReadOnlySpan<byte> key, long now)
    {
        var entry = FindLiveForWrite(key, now);
        if (entry is null || !entry.HasExpiry)
        {
            return CacheReply.FromInteger(0);
        }

        MarkWritten(entry);
        ChangeExpiry(entry, CacheEntry.NoExpiry);
        return CacheReply.FromInteger(1);
    }

    private CacheReply ApplyIncrementBy(ReadOnlySpan<byte> key, long delta, long now)
    {
        var entry = FindLiveForWrite(key, now);
        long current = 0;
        if (entry is not null && !IntegerFormat.TryParseStrict(entry.Value.Span, out current))
        {
            return CacheReply.FromError(CacheErrors.NotAnInteger);
        }

        if ((delta < 0 && current < 0 && delta < long.MinValue - current)
            || (delta > 0 && current > 0 && delta > long.MaxValue - current))
        {
            return CacheReply.FromError(CacheErrors.IncrementOverflow);
        }

        var result = current + delta;
        var text = IntegerFormat.Format(result);
        if (!FitsUnderCap(CacheEntry.ChargeFor(key.Length, text.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        // INCRBY changes the value in place in Redis: the TTL stays.
        Write(entry, key, text, entry?.ExpireAtMs ?? CacheEntry.NoExpiry);
        return CacheReply.FromInteger(result);
    }

    private CacheReply ApplyMultiSet(CacheCommand.PairList pairs, bool ifNoneExist, long now)
    {
        if (ifNoneExist)
        {
            foreach (var pair in pairs)
            {
                if (FindLiveForWrite(pair.Key, now) is not null)
                {
                    return CacheReply.FromInteger(0);
                }
            }
        }

        if (_memoryCapBytes > 0)
        {
            // All or nothing: refuse up front rather than leave half the pairs written. A duplicate key is charged
            // twice here, which only makes the check stricter.
            long total = 0;
            foreach (var pair in pairs)
            {
                total += CacheEntry.ChargeFor(pair.Key.Length, pair.Value.Length);
            }

            if (total > _memoryCapBytes)
            {
                return CacheReply.FromError(CacheErrors.OutOfMemory);
            }
        }

        foreach (var pair in pairs)
        {
            // MSET drops any TTL, as SET without options does.
            Write(FindLiveForWrite(pair.Key, now), pair.Key, CopyValue(pair.Value), CacheEntry.NoExpiry);
        }

        return ifNoneExist ? CacheReply.FromInteger(1) : CacheReply.Ok;
    }

    private CacheReply ApplyGetDelete(ReadOnlySpan<byte> key, long now)
    {
        var entry = FindLiveForWrite(key, now);
        if (entry is null)
        {
            return CacheReply.Nil;
        }

        RemoveEntry(entry);
        return CacheReply.FromBulk(entry.Value);
    }

    private CacheReply ApplyGetExpire(ReadOnlySpan<byte> key, GetExpiry expiry, long expireAtMs, long now)
    {
        var entry = FindLiveForWrite(key, now);
        if (entry is null)
        {
            return CacheReply.Nil;
        }

        var reply = CacheReply.FromBulk(entry.Value);
        if (expiry == GetExpiry.At && expireAtMs <= now)
        {
            // Redis's getexCommand deletes a key whose new expiry has passed, after reading its value.
            RemoveEntry(entry);
            _expiredKeys++;
        }
        else if (expiry == GetExpiry.At || entry.HasExpiry)
        {
            MarkWritten(entry);
            ChangeExpiry(entry, expiry == GetExpiry.At ? expireAtMs : CacheEntry.NoExpiry);
        }

        return reply;
    }

    private static string StringTooLongText(in CacheCommand command) =>
        command.UsesRedis7StringLimitText ? CacheErrors.StringTooLong : CacheErrors.StringTooLongBeforeFormat6;

    private CacheReply ApplyAppend(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, string tooLong, long now)
    {
        var entry = FindLiveForWrite(key, now);
        var current = entry is null ? [] : entry.Value.Span;
        // Redis's checkStringLength; a longer value would also make the snapshot unreadable.
        if ((long)current.Length + value.Length > MaxStringLength)
        {
            return CacheReply.FromError(tooLong);
        }

        if (!FitsUnderCap(CacheEntry.ChargeFor(key.Length, current.Length + value.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        var length = current.Length + value.Length;
        WriteAt(entry, key, current, current.Length, value, length);
        return CacheReply.FromInteger(length);
    }

    /// <summary>
    /// Redis 7.0's setrangeCommand: an empty value changes nothing and answers the length (0 for a missing key, which is not
    /// created); otherwise the value is written at the offset, zero bytes filling any gap, and the expiry stays.
    /// </summary>
    private CacheReply ApplySetRange(ReadOnlySpan<byte> key, long offset, ReadOnlySpan<byte> value, string tooLong, long now)
    {
        var entry = FindLiveForWrite(key, now);
        var current = entry is null ? [] : entry.Value.Span;
        if (value.IsEmpty)
        {
            return CacheReply.FromInteger(current.Length);
        }

        // checkStringLength: offset + length, which cannot overflow (offset <= long.MaxValue, length < 2^31) as unsigned.
        if ((ulong)offset + (ulong)value.Length > MaxStringLength)
        {
            return CacheReply.FromError(tooLong);
        }

        var length = Math.Max(current.Length, (int)offset + value.Length);
        if (!FitsUnderCap(CacheEntry.ChargeFor(key.Length, length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        WriteAt(entry, key, current, (int)offset, value, length);
        return CacheReply.FromInteger(length);
    }

    /// <summary>Values shorter than this get no spare room: copying them costs less than the room would waste.</summary>
    internal const int GrowthRoomFromBytes = 64 * 1024;

    /// <summary>The most spare room a value gets: with a quarter of its length, at most this much memory goes uncharged per key.</summary>
    internal const int MaxGrowthRoomBytes = 64 * 1024 * 1024;

    /// <summary>
    /// Stores <paramref name="current"/> (the key's value, empty if none) with <paramref name="value"/> written at
    /// <paramref name="offset"/>, <paramref name="length"/> bytes in all, zero bytes filling any gap; the expiry stays.
    /// Stored bytes never change (replies and snapshots may share them): a write wholly past the value's end goes into
    /// the room the key's own array has left there, which readers of the shorter value never look at; anything else is a
    /// new array, with room for a quarter as much again (at most <see cref="MaxGrowthRoomBytes"/>) when the write grows a
    /// large value, so that a large value built by many APPENDs is copied now and then, not at each one (each copy of a
    /// value of hundreds of MiB held the node's loop for seconds).
    /// </summary>
    private void WriteAt(CacheEntry? entry, ReadOnlySpan<byte> key, ReadOnlySpan<byte> current, int offset, ReadOnlySpan<byte> value, int length)
    {
        var expireAtMs = entry?.ExpireAtMs ?? CacheEntry.NoExpiry;
        if (entry is { GrowthBuffer: { } room } && offset >= current.Length && length <= room.Length)
        {
            // Past the value's end the room is still zero: the gap needs no filling.
            value.CopyTo(room.AsSpan(offset));
            Write(entry, key, room.AsMemory(0, length), expireAtMs, room);
            return;
        }

        // Zeroed, which fills the gap.
        var spare = length < GrowthRoomFromBytes || length <= current.Length ? 0 : Math.Min(length / 4, MaxGrowthRoomBytes);
        var grown = new byte[Math.Min(MaxStringLength, (long)length + spare)];
        current.CopyTo(grown);
        value.CopyTo(grown.AsSpan(offset));
        Write(entry, key, grown.AsMemory(0, length), expireAtMs, grown.Length > length ? grown : null);
    }

    /// <summary>
    /// Redis 7.0's copyCommand within one database: 1 when the value and its expiry were copied, 0 when the source is
    /// missing or the destination exists without REPLACE. The copy is a new write of the destination; the source is not
    /// written. The two share the value array (values are never changed in place) but each is charged for it.
    /// </summary>
    private CacheReply ApplyCopy(ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, bool replace, long now)
    {
        if (source.SequenceEqual(destination))
        {
            return CacheReply.FromError(CacheErrors.SameObject);
        }

        var entry = FindLiveForWrite(source, now);
        if (entry is null)
        {
            return CacheReply.FromInteger(0);
        }

        var existing = FindLiveForWrite(destination, now);
        if (existing is not null && !replace)
        {
            return CacheReply.FromInteger(0);
        }

        if (!FitsUnderCap(CacheEntry.ChargeFor(destination.Length, entry.Value.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        Write(existing, destination, entry.Value, entry.ExpireAtMs);
        return CacheReply.FromInteger(1);
    }

    private CacheReply ApplyIncrementByFloat(ReadOnlySpan<byte> key, ReadOnlySpan<byte> increment, long now)
    {
        var entry = FindLiveForWrite(key, now);
        var current = entry is null ? "0"u8 : entry.Value.Span;
        if (!FloatFormat.TryParse(current, out _) || !FloatFormat.TryParse(increment, out _))
        {
            return CacheReply.FromError(CacheErrors.NotAFloat);
        }

        if (FloatFormat.Add(current, increment) is not { } text)
        {
            return CacheReply.FromError(CacheErrors.FloatOverflow);
        }

        if (!FitsUnderCap(CacheEntry.ChargeFor(key.Length, text.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        // As INCRBY, the value changes in place in Redis: the TTL stays.
        Write(entry, key, text, entry?.ExpireAtMs ?? CacheEntry.NoExpiry);
        return CacheReply.FromBulk(text);
    }

    /// <summary>Drops every key at once; sessions are not keys and stay, so retried writes still apply once.</summary>
    private CacheReply ApplyFlushAll()
    {
        NoteFlushed();

        // New containers rather than Clear(), so that the memory of a large keyspace is given back.
        _entries = new Dictionary<byte[], CacheEntry>(_entries.Comparer);
        _entriesBySpan = _entries.GetAlternateLookup<ReadOnlySpan<byte>>();
        _expiryIndex = new SortedSet<CacheEntry>(ExpiryOrder.Instance);
        _randomKeys = new RandomKeySample();
        _oldestWritten = null;
        _newestWritten = null;
        _usedBytes = 0;
        DropScanIndex();
        DetachWalks();
        return CacheReply.Ok;
    }

    /// <summary>Redis 7.0's renameGenericCommand: the value and its expiry move to the new name, which counts as a new write.</summary>
    private CacheReply ApplyRename(ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, bool ifAbsent, long now)
    {
        var entry = FindLiveForWrite(source, now);
        if (entry is null)
        {
            return CacheReply.FromError(CacheErrors.NoSuchKey);
        }

        var done = ifAbsent ? CacheReply.FromInteger(1) : CacheReply.Ok;
        if (source.SequenceEqual(destination))
        {
            return ifAbsent ? CacheReply.FromInteger(0) : done;
        }

        var replaced = FindLiveForWrite(destination, now);
        if (replaced is not null && ifAbsent)
        {
            return CacheReply.FromInteger(0);
        }

        if (!FitsUnderCap(CacheEntry.ChargeFor(destination.Length, entry.Value.Length)))
        {
            return CacheReply.FromError(CacheErrors.OutOfMemory);
        }

        if (replaced is not null)
        {
            RemoveEntry(replaced);
        }

        RemoveEntry(entry);
        Write(null, destination, entry.Value, entry.ExpireAtMs);
        return done;
    }

    /// <summary>
    /// Looks a key up for a write command; a key expired by the entry's time is removed on the spot (every replica does the
    /// same at the same log position) and reported absent.
    /// </summary>
    private CacheEntry? FindLiveForWrite(ReadOnlySpan<byte> key, long now)
    {
        if (!_entriesBySpan.TryGetValue(key, out var entry))
        {
            return null;
        }

        if (entry.IsExpiredAt(now))
        {
            RemoveEntry(entry);
            _expiredKeys++;
            return null;
        }

        return entry;
    }

    /// <summary>
    /// Stores <paramref name="value"/> (never to change from now on) under the key, as its newest write;
    /// <paramref name="growthBuffer"/> is the array it starts when this key alone may write past its end.
    /// </summary>
    private void Write(CacheEntry? existing, ReadOnlySpan<byte> key, ReadOnlyMemory<byte> value, long expireAtMs, byte[]? growthBuffer = null)
    {
        if (existing is null)
        {
            existing = new CacheEntry(key.ToArray(), value) { Revision = _appliedIndex, GrowthBuffer = growthBuffer };
            _entries.Add(existing.Key, existing);
            _usedBytes += existing.ChargedBytes;
            AppendNewest(existing);
            _randomKeys.Add(existing);
            NoteCreatedForScan(existing);
        }
        else
        {
            // Moved first: a walk in progress must see the entry as it was before this write.
            MarkWritten(existing);
            _usedBytes += (long)value.Length - existing.Value.Length;
            existing.Value = value;
            existing.GrowthBuffer = growthBuffer;
        }

        ChangeExpiry(existing, expireAtMs);
    }

    private static byte[] CopyValue(ReadOnlySpan<byte> value) => value.IsEmpty ? [] : value.ToArray();

    private bool FitsUnderCap(long chargedBytes) => _memoryCapBytes == 0 || chargedBytes <= _memoryCapBytes;

    private void ChangeExpiry(CacheEntry entry, long expireAtMs)
    {
        if (entry.ExpireAtMs == expireAtMs)
        {
            return;
        }

        var hadExpiry = entry.HasExpiry;
        if (hadExpiry)
        {
            _expiryIndex.Remove(entry);
        }

        entry.ExpireAtMs = expireAtMs;
        if (entry.HasExpiry)
        {
            _expiryIndex.Add(entry);
        }

        if (hadExpiry != entry.HasExpiry)
        {
            _randomKeys.ExpiryChanged(entry, hadExpiry);
        }
    }

    private void RemoveEntry(CacheEntry entry)
    {
        NoteChangingForWalks(entry);
        NoteRemoved(entry);
        _entries.Remove(entry.Key);
        if (entry.HasExpiry)
        {
            _expiryIndex.Remove(entry);
        }

        Unlink(entry);
        _randomKeys.Remove(entry);
        _usedBytes -= entry.ChargedBytes;
        NoteRemovedForScan(entry);
    }

    /// <summary>Removes every key whose expiry is at or before <paramref name="horizonMs"/>: whole milliseconds. Costs O(removed · log n).</summary>
    private long PurgeExpiredUpTo(long horizonMs) => PurgeExpired(horizonMs, lastKey: default, wholeLastMillisecond: true);

    /// <summary>
    /// Removes every key that expires before <paramref name="horizonMs"/>, and those that expire at it whose bytes sort at or
    /// before <paramref name="lastKey"/>: a stop inside a millisecond, at the same key on every replica, since the expiry
    /// index's order depends on the keys alone. Costs O(removed · log n).
    /// </summary>
    private long PurgeExpiredThrough(long horizonMs, ReadOnlySpan<byte> lastKey) => PurgeExpired(horizonMs, lastKey, wholeLastMillisecond: false);

    private long PurgeExpired(long horizonMs, ReadOnlySpan<byte> lastKey, bool wholeLastMillisecond)
    {
        long purged = 0;
        while (_expiryIndex.Count > 0)
        {
            var soonest = _expiryIndex.Min!;
            if (wholeLastMillisecond ? soonest.ExpireAtMs > horizonMs : !ExpiryOrder.IsAtOrBefore(soonest, horizonMs, lastKey))
            {
                break;
            }

            RemoveEntry(soonest);
            purged++;
        }

        _expiredKeys += purged;
        return purged;
    }

    /// <summary>
    /// Over the cap: reclaim what has expired by now first, then evict least recently written keys until under it. With
    /// <paramref name="onlyAsNeeded"/> (entries of format 5 on), expired keys go soonest first, in the expiry index's order,
    /// which every replica shares, and only until usage is under the cap: the first write over the cap after a wave of keys
    /// expired together removes about as many as it needs room for, not the whole wave in one apply (the leader's purges
    /// take the rest a bounded bite at a time). Either way, the live keys evicted are the same: only once no expired key
    /// is left.
    /// </summary>
    private void EnforceMemoryCap(long now, bool onlyAsNeeded)
    {
        if (_memoryCapBytes == 0 || _usedBytes <= _memoryCapBytes)
        {
            return;
        }

        if (onlyAsNeeded)
        {
            while (_usedBytes > _memoryCapBytes && _expiryIndex.Count > 0 && _expiryIndex.Min!.IsExpiredAt(now))
            {
                RemoveEntry(_expiryIndex.Min);
                _expiredKeys++;
            }
        }
        else
        {
            PurgeExpiredUpTo(now);
        }

        while (_usedBytes > _memoryCapBytes && _oldestWritten is not null)
        {
            RemoveEntry(_oldestWritten);
            _evictedKeys++;
        }
    }

    private void AppendNewest(CacheEntry entry)
    {
        entry.WriteSequence = ++_writeSequence;
        entry.Older = _newestWritten;
        entry.Newer = null;
        if (_newestWritten is null)
        {
            _oldestWritten = entry;
        }
        else
        {
            _newestWritten.Newer = entry;
        }

        _newestWritten = entry;
    }

    private void Unlink(CacheEntry entry)
    {
        if (entry.Older is null)
        {
            _oldestWritten = entry.Newer;
        }
        else
        {
            entry.Older.Newer = entry.Newer;
        }

        if (entry.Newer is null)
        {
            _newestWritten = entry.Older;
        }
        else
        {
            entry.Newer.Older = entry.Older;
        }

        entry.Older = null;
        entry.Newer = null;
    }

    /// <summary>
    /// Moves a key to the newest end of the write order, and gives it this entry's index as its revision: any change to its
    /// value or TTL counts as a write (and as a change to WATCH). Called before the change, so that a walk in progress can
    /// keep the key as it was.
    /// </summary>
    private void MarkWritten(CacheEntry entry)
    {
        NoteChangingForWalks(entry);
        entry.Revision = _appliedIndex;
        if (ReferenceEquals(entry, _newestWritten))
        {
            entry.WriteSequence = ++_writeSequence;
            return;
        }

        Unlink(entry);
        AppendNewest(entry);
    }

    /// <summary>
    /// Drops sessions idle for longer than the timeout. The clock never goes back, so the activity list is sorted by last
    /// activity and this stops at the first session still alive: O(expired).
    /// </summary>
    /// <summary>Starts a session at sequence 0 (its writes start at 1); a session that exists is only touched, so a repeated registration changes nothing.</summary>
    private CacheReply RegisterSession(ulong clientId, long now)
    {
        if (!_sessions.TryGetValue(clientId, out var session))
        {
            session = new ClientSession(clientId) { LastReply = CacheReply.Ok };
            _sessions.Add(clientId, session);
        }

        TouchSession(session, now);
        return CacheReply.Ok;
    }

    private void ExpireIdleSessions(long now)
    {
        while (_leastRecentSession is { } oldest && now > SaturatingAdd(oldest.LastActiveMs, _sessionTimeoutMs))
        {
            UnlinkSession(oldest);
            _sessions.Remove(oldest.ClientId);
        }
    }

    private void TouchSession(ClientSession session, long now)
    {
        session.LastActiveMs = now;
        if (ReferenceEquals(session, _mostRecentSession))
        {
            return;
        }

        UnlinkSession(session);
        AppendSession(session);
    }

    private void AppendSession(ClientSession session)
    {
        session.Older = _mostRecentSession;
        session.Newer = null;
        if (_mostRecentSession is null)
        {
            _leastRecentSession = session;
        }
        else
        {
            _mostRecentSession.Newer = session;
        }

        _mostRecentSession = session;
    }

    private void UnlinkSession(ClientSession session)
    {
        // A session created just now is in no list yet.
        if (session.Older is null && !ReferenceEquals(_leastRecentSession, session))
        {
            return;
        }

        if (session.Older is null)
        {
            _leastRecentSession = session.Newer;
        }
        else
        {
            session.Older.Newer = session.Newer;
        }

        if (session.Newer is null)
        {
            _mostRecentSession = session.Older;
        }
        else
        {
            session.Newer.Older = session.Older;
        }

        session.Older = null;
        session.Newer = null;
    }

    private static long SaturatingAdd(long a, long b)
    {
        var sum = unchecked(a + b);
        return ((a ^ sum) & (b ^ sum)) < 0 ? (a < 0 ? long.MinValue : long.MaxValue) : sum;
    }
}
