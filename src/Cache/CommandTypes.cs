namespace Dcache.Cache;

/// <summary>The write commands a Raft entry can carry. The byte values are part of the entry format: never renumber.</summary>
public enum CacheCommandKind : byte
{
    Set = 1,
    Delete = 2,
    Expire = 3,
    Persist = 4,
    IncrementBy = 5,
    MultiSet = 6,

    /// <summary>Proposed by the leader on a timer so that expired keys are reclaimed at the same log position on every replica.</summary>
    PurgeExpired = 7,

    /// <summary>
    /// Starts a write session before its first write (format version 3 and later), so that every write of the session
    /// can say its session must exist: the retry of the first write then cannot start the session a second time.
    /// </summary>
    RegisterSession = 8,

    // Format version 3 and later, like RegisterSession: an older build must refuse them rather than skip them.

    /// <summary>GETDEL: the value, and the key removed.</summary>
    GetDelete = 9,

    /// <summary>GETEX with EX/PX/EXAT/PXAT (already absolute) or PERSIST: the value, and the expiry changed.</summary>
    GetExpire = 10,

    /// <summary>APPEND: the new length; the expiry stays.</summary>
    Append = 11,

    /// <summary>INCRBYFLOAT, with the increment as the client wrote it (every replica parses it alike).</summary>
    IncrementByFloat = 12,

    /// <summary>MSETNX: every pair, or none when any of the keys exists.</summary>
    MultiSetIfNoneExist = 13,

    /// <summary>FLUSHALL / FLUSHDB: every key removed; sessions stay.</summary>
    FlushAll = 14,

    /// <summary>RENAME: the value and expiry move to the new name, replacing any key there.</summary>
    Rename = 15,

    /// <summary>RENAMENX: RENAME only when the new name is free.</summary>
    RenameIfAbsent = 16,

    /// <summary>
    /// Format version 5 and later: the leader's purge that may stop inside a millisecond of expiry, at a key. An older
    /// build must refuse it rather than skip it (it would keep keys every other replica removed).
    /// </summary>
    PurgeExpiredThroughKey = 17,

    // Format version 6 and later: an older build must refuse them rather than skip them.

    /// <summary>SETRANGE: the value overwritten from an offset (zero bytes fill a gap); the expiry stays; the new length.</summary>
    SetRange = 18,

    /// <summary>COPY (same database): the value and expiry copied to the destination, which REPLACE lets it overwrite; 1 or 0.</summary>
    Copy = 19,

    // Format version 7 and later: an older build must refuse them rather than skip them.

    /// <summary>
    /// MULTI/EXEC: several commands applied in one step, in order, nothing else between them; the reply is the array of
    /// their replies (a command that fails gives its error in its slot and the others still apply, as in Redis).
    /// </summary>
    Transaction = 20,

    /// <summary>A read (<see cref="ReadKind"/>) answered at apply time: only inside a <see cref="Transaction"/>.</summary>
    Read = 21,

    // Format version 8 and later.

    /// <summary>
    /// MULTI/EXEC after WATCH: the watched keys, each with the applied index its WATCH read it at and whether it was live
    /// then, checked first; when any changed since, nothing applies and the reply is nil. Otherwise as
    /// <see cref="Transaction"/>, but it may carry no command (an empty EXEC still checks its watches, and the first
    /// WATCH of a cluster proposes one with neither to start the key revisions: see CacheStateMachine.RevisionFloor).
    /// </summary>
    WatchedTransaction = 22,
}

/// <summary>The reads a <see cref="CacheCommandKind.Read"/> entry carries. The byte values are part of the entry format.</summary>
public enum ReadKind : byte
{
    /// <summary>GET: the value or nil.</summary>
    Get = 1,

    /// <summary>MGET: an array of values or nils.</summary>
    MultiGet = 2,

    /// <summary>EXISTS / TOUCH: how many of the keys exist (a key named twice counted twice).</summary>
    Exists = 3,

    /// <summary>TTL: seconds left, rounded; -1 without expiry, -2 without the key.</summary>
    TimeToLiveSeconds = 4,

    /// <summary>PTTL.</summary>
    TimeToLiveMilliseconds = 5,

    /// <summary>EXPIRETIME: the absolute expiry in unix seconds, rounded; -1 without expiry, -2 without the key.</summary>
    ExpireTimeSeconds = 6,

    /// <summary>PEXPIRETIME.</summary>
    ExpireTimeMilliseconds = 7,

    /// <summary>STRLEN.</summary>
    StringLength = 8,

    /// <summary>GETRANGE / SUBSTR with the client's offsets.</summary>
    GetRange = 9,

    /// <summary>TYPE: the bulk "string" or "none".</summary>
    Type = 10,

    /// <summary>DBSIZE: the live keys.</summary>
    KeyCount = 11,
}

/// <summary>A key a WATCH read at applied index <paramref name="WatchedAt"/>, live (present, unexpired) then or not.</summary>
public readonly record struct WatchedKey(ReadOnlyMemory<byte> Key, ulong WatchedAt, bool WasLive);

/// <summary>What GETEX does to the key's expiry. The byte values are part of the entry format.</summary>
public enum GetExpiry : byte
{
    /// <summary>EX/PX/EXAT/PXAT, already an absolute unix time in ms.</summary>
    At = 1,

    /// <summary>PERSIST: remove the expiry.</summary>
    Persist = 2,
}

/// <summary>SET's existence condition. The byte values are part of the entry format.</summary>
public enum SetCondition : byte
{
    Always = 0,

    /// <summary>NX: set only when the key is absent.</summary>
    IfAbsent = 1,

    /// <summary>XX: set only when the key is present.</summary>
    IfPresent = 2,
}

/// <summary>What SET does to the key's time to live. The byte values are part of the entry format.</summary>
public enum SetExpiry : byte
{
    /// <summary>No expiry option: the key ends up without a TTL (an existing TTL is discarded, as in Redis).</summary>
    None = 0,

    /// <summary>EX/PX/EXAT/PXAT, already converted to an absolute unix time in ms by the proposer.</summary>
    At = 1,

    /// <summary>KEEPTTL: keep whatever TTL the key has.</summary>
    KeepTtl = 2,
}

/// <summary>
/// EXPIRE's Redis 7 options. Combinations follow Redis: NX stands alone; XX may combine with GT or LT; GT and LT exclude each other.
/// The bit values are part of the entry format.
/// </summary>
[Flags]
public enum ExpireCondition : byte
{
    Always = 0,

    /// <summary>NX: only when the key has no TTL.</summary>
    IfNoTtl = 1,

    /// <summary>XX: only when the key has a TTL.</summary>
    IfHasTtl = 2,

    /// <summary>GT: only when the new expiry is later than the current one (no TTL counts as infinite, so GT never applies to it).</summary>
    IfGreater = 4,

    /// <summary>LT: only when the new expiry is earlier than the current one (no TTL counts as infinite, so LT always applies to it).</summary>
    IfLess = 8,
}

/// <summary>
/// What every write entry carries besides its command: the client session and sequence number that make a retried
/// write apply once (client id 0 = no session), and the leader's wall-clock time in unix ms when it proposed the entry,
/// which is the only notion of "now" the state machine uses when it applies. <paramref name="SessionMustExist"/> marks the
/// retry of a write an earlier attempt of which may have applied: it must find its session, or it is not applied
/// (format version 3; see <see cref="CacheCommand.FormatVersion"/>).
/// </summary>
public readonly record struct CommandEnvelope(ulong ClientId, ulong Sequence, long NowMs, bool SessionMustExist = false)
{
    /// <summary>The client id of entries that belong to no session (e.g. the leader's own purge entries): never deduplicated.</summary>
    public const ulong NoSession = 0;

    public bool HasSession => ClientId != NoSession;
}

/// <summary>SET's options as the proposer resolved them (relative expiries already turned into <see cref="ExpireAtMs"/>).</summary>
public readonly record struct SetOptions(
    SetCondition Condition = SetCondition.Always,
    bool ReturnOldValue = false,
    SetExpiry Expiry = SetExpiry.None,
    long ExpireAtMs = 0)
{
    public static SetOptions Plain => default;

    public static SetOptions ExpiringAt(long expireAtMs) => new(Expiry: SetExpiry.At, ExpireAtMs: expireAtMs);
}
