using System.Buffers;
using System.Globalization;

namespace Dcache.Cache;

/// <summary>
/// A write command as carried in a Raft entry, decoded without copying: keys and values are slices of the entry bytes,
/// so a decoded command lives only as long as the buffer it came from (hence a ref struct).
/// </summary>
/// <remarks>
/// Format, version 9 (all integers little-endian; "varint" is unsigned LEB128; "bytes" is a varint length then the bytes).
/// Version 9 entries are version 8's, byte for byte, with two meanings more: a session keeps a reply larger than
/// <see cref="CacheStateMachine.MaxKeptReplyBytes"/> as an error saying the write applied (<see cref="KeepsLargeRepliesAsErrors"/>),
/// and a session's write numbered 0 (only its registration is) is malformed instead of answered as a retry.
/// Version 8 adds one kind, <see cref="CacheCommandKind.WatchedTransaction"/> (MULTI/EXEC after WATCH, <see cref="WatchVersion"/>),
/// and one meaning: the first version 8 entry a replica applies sets its revision floor (CacheStateMachine.RevisionFloor).
/// Version 7 adds two kinds, <see cref="CacheCommandKind.Transaction"/> (MULTI/EXEC) and <see cref="CacheCommandKind.Read"/>,
/// which exists only inside a transaction (<see cref="TransactionVersion"/>). Version 6 adds two kinds, <see cref="CacheCommandKind.SetRange"/> and <see cref="CacheCommandKind.Copy"/>
/// (<see cref="SetRangeAndCopyVersion"/>), and one meaning: a value that would grow past the 512 MiB limit is refused with
/// Redis 7.0's wording of the error (<see cref="UsesRedis7StringLimitText"/>). Version 5 adds one kind, <see cref="CacheCommandKind.PurgeExpiredThroughKey"/> (<see cref="PurgeThroughKeyVersion"/>),
/// and one meaning: over the memory cap, expired keys are reclaimed only as far as the cap needs
/// (<see cref="ReclaimsExpiredOnlyAsNeeded"/>). Version 4 entries are version 3's, byte for byte and in meaning: the
/// version is the Raft log's, and 4 says the reader also knows a membership change that moves a member to a new address
/// (see <see cref="MemberUpdateVersion"/>). Versions 1 and 2 have the same bytes except that the kind byte's top bit is
/// always 0 there; they differ from 3 and from each other only in how an unknown session is treated
/// (<see cref="RequiresKnownSession"/>, <see cref="CommandEnvelope.SessionMustExist"/>):
/// <code>
/// u8 version (=9) | u8 kind (bit 7: session must exist, version 3 and later) | u64 client id | varint sequence | i64 now (unix ms, leader's clock at proposal) | body
/// Set          : u8 flags (bits 0-1 SetCondition, bit 2 GET, bits 3-4 SetExpiry, others 0) | [i64 expire-at ms, only when SetExpiry.At] | bytes key | bytes value
/// Delete       : varint key count (>= 1) | key count x bytes key
/// Expire       : u8 ExpireCondition | i64 expire-at ms | bytes key
/// Persist      : bytes key
/// IncrementBy  : i64 delta | bytes key
/// MultiSet     : varint pair count (>= 1) | pair count x (bytes key, bytes value)
/// PurgeExpired : i64 purge-up-to ms (every key expiring at or before it: whole milliseconds)
/// RegisterSession (version 3 and later; a client id, sequence 0) : nothing
/// GetDelete (3)        : bytes key
/// GetExpire (3)        : u8 GetExpiry | [i64 expire-at ms, only when GetExpiry.At] | bytes key
/// Append (3)           : bytes key | bytes value
/// IncrementByFloat (3) : bytes increment (the client's text) | bytes key
/// MultiSetIfNoneExist (3) : as MultiSet
/// FlushAll (3)         : nothing
/// Rename, RenameIfAbsent (3) : bytes source | bytes destination
/// PurgeExpiredThroughKey (5) : i64 purge-up-to ms | bytes last key (every key before (ms, key) in expiry order, and it)
/// SetRange (6)         : varint offset (at most long.MaxValue) | bytes key | bytes value
/// Copy (6)             : u8 flags (bit 0 REPLACE, others 0) | bytes source | bytes destination
/// Transaction (7)      : varint command count (>= 1) | command count x bytes (u8 kind | body): each command as its own
///                        entry would carry it without version, client id, sequence and time (the transaction's apply to
///                        it); any kind but Transaction, RegisterSession and the purges; no session-must-exist bit
/// WatchedTransaction (8) : varint watch count | watch count x (varint applied index of its WATCH | u8 live then (0 or 1) |
///                        bytes key) | varint command count (>= 0) | the commands as in Transaction
/// Read (7, only inside a Transaction) : u8 ReadKind | [i64 start | i64 end, GetRange only] | varint key count (0 for
///                        KeyCount, 1 for the single-key reads, >= 1 for MultiGet and Exists) | key count x bytes key
/// </code>
/// The kinds marked (3) exist from version 3 on, the one marked (5) from version 5, those marked (6) from version 6 and
/// those marked (7) from version 7 and the one marked (8) from version 8: in
/// an older version their kind byte is unknown. Nothing may follow the body. A new field or command, or a new meaning,
/// means a new version byte, so an old replica refuses an entry it does not understand instead of applying it differently.
/// (Kinds 9 to 16 joined version 3 before any build that writes it was released; from now on, new kinds need a new
/// version, 9 or later.)
/// </remarks>
public readonly ref struct CacheCommand
{
    /// <summary>
    /// The newest format version this build reads, and the one its encoders write. It also reads versions 1 and 2, which
    /// differ only in meaning (see <see cref="RequiresKnownSession"/>) and in having no session-must-exist bit, 3, which
    /// differs from 4 in nothing a cache entry carries, and 4, which lacks <see cref="CacheCommandKind.PurgeExpiredThroughKey"/>
    /// and reclaims every expired key at once over the memory cap, and 5, which lacks <see cref="CacheCommandKind.SetRange"/>
    /// and <see cref="CacheCommandKind.Copy"/> and words the string length error differently, and 6, which lacks
    /// <see cref="CacheCommandKind.Transaction"/>, and 7, which lacks <see cref="CacheCommandKind.WatchedTransaction"/>, and
    /// 8, which keeps every reply of a session whole; see <see cref="SetFormatVersion"/>.
    /// </summary>
    public const byte FormatVersion = 9;

    /// <summary>
    /// The first format version whose readers know the membership change that moves a member to a new address (a Raft
    /// entry, not a cache command: the version is the whole log's). An older build would skip that change and keep
    /// dialling the old address, so a leader must not propose it while a member reads only an older version.
    /// </summary>
    public const byte MemberUpdateVersion = 4;

    /// <summary>The oldest format version this build reads.</summary>
    public const byte OldestFormatVersion = 1;

    /// <summary>
    /// Marks an encoded entry as format <paramref name="version"/>. For the kinds an older version has, the versions
    /// differ only in meaning and in the session-must-exist bit, which an older version has no room for and loses, so a
    /// leader whose cluster still has members that read only an older version (a rolling upgrade) writes that version:
    /// every member applies it as those members always did, instead of stopping at a version they do not know. A kind the
    /// older version lacks (<see cref="MinimumFormatVersion"/>) cannot be marked older: it throws.
    /// </summary>
    public static void SetFormatVersion(Span<byte> entry, byte version)
    {
        if (version is < OldestFormatVersion or > FormatVersion)
        {
            throw new ArgumentOutOfRangeException(nameof(version), version, $"format versions {OldestFormatVersion} to {FormatVersion}");
        }

        if (entry.IsEmpty || entry[0] is < OldestFormatVersion or > FormatVersion)
        {
            throw new ArgumentException("not an encoded cache command", nameof(entry));
        }

        if (entry.Length > 1 && MinimumFormatVersion((CacheCommandKind)(entry[1] & ~SessionMustExistBit)) is var needed && version < needed)
        {
            throw new ArgumentException($"a {(CacheCommandKind)(entry[1] & ~SessionMustExistBit)} entry needs format version {needed}", nameof(version));
        }

        entry[0] = version;
        if (version < SessionMustExistVersion && entry.Length > 1)
        {
            entry[1] &= unchecked((byte)~SessionMustExistBit);
        }
    }

    /// <summary>The first format version with the session-must-exist bit in the kind byte and <see cref="CacheCommandKind.RegisterSession"/>.</summary>
    public const byte SessionRegistrationVersion = 3;

    /// <summary>
    /// The first format version with <see cref="CacheCommandKind.PurgeExpiredThroughKey"/>, a purge that may stop inside a
    /// millisecond of expiry, and in which the memory cap reclaims expired keys only as far as it needs
    /// (<see cref="ReclaimsExpiredOnlyAsNeeded"/>). Both stop at a key in the expiry index's order (expiry time, then the
    /// key's bytes), which every replica of this build shares whatever its history.
    /// </summary>
    public const byte PurgeThroughKeyVersion = 5;

    /// <summary>
    /// The first format version with <see cref="CacheCommandKind.SetRange"/> and <see cref="CacheCommandKind.Copy"/>, and in
    /// which a value that would grow past 512 MiB is refused in Redis 7.0's words (<see cref="UsesRedis7StringLimitText"/>).
    /// </summary>
    public const byte SetRangeAndCopyVersion = 6;

    /// <summary>The first format version with <see cref="CacheCommandKind.Transaction"/> and <see cref="CacheCommandKind.Read"/> (MULTI/EXEC).</summary>
    public const byte TransactionVersion = 7;

    /// <summary>
    /// The first format version with <see cref="CacheCommandKind.WatchedTransaction"/> (WATCH). A replica that applies an
    /// entry of this version or later knows every member runs a build that keeps key revisions.
    /// </summary>
    public const byte WatchVersion = 8;

    /// <summary>The first format version whose sessions keep a large reply as an error (<see cref="KeepsLargeRepliesAsErrors"/>).</summary>
    public const byte KeptReplyLimitVersion = 9;

    /// <summary>
    /// The oldest format version that has <paramref name="kind"/>: 8 for WatchedTransaction, 7 for Transaction and Read, 6 for SetRange and Copy, 5 for <see cref="CacheCommandKind.PurgeExpiredThroughKey"/>,
    /// 3 for <see cref="CacheCommandKind.RegisterSession"/> and the kinds after it up to RenameIfAbsent, 1 for the others. A
    /// leader must not propose such an entry while a member reads only an older version: that member would stop at it.
    /// </summary>
    public static byte MinimumFormatVersion(CacheCommandKind kind) => kind switch
    {
        >= CacheCommandKind.WatchedTransaction => WatchVersion,
        >= CacheCommandKind.Transaction => TransactionVersion,
        >= CacheCommandKind.SetRange => SetRangeAndCopyVersion,
        >= CacheCommandKind.PurgeExpiredThroughKey => PurgeThroughKeyVersion,
        >= CacheCommandKind.RegisterSession => SessionRegistrationVersion,
        _ => OldestFormatVersion,
    };

    private const byte SessionMustExistVersion = SessionRegistrationVersion;

    private const byte SessionMustExistBit = 0b1000_0000;

    private const byte SetConditionMask = 0b0000_0011;
    private const byte SetReturnOldValueBit = 0b0000_0100;
    private const int SetExpiryShift = 3;
    private const byte SetExpiryMask = 0b0001_1000;

    private const byte CopyReplaceBit = 0b0000_0001;

    // The envelope: version, kind, client id (8), sequence (varint), now (8).
    private const int FixedHeaderSize = 1 + 1 + 8 + 8;

    private readonly ReadOnlySpan<byte> _items;

    // Expire's expiry time, a purge's horizon or SetRange's offset: one slot, exposed under the name that fits the kind.
    private readonly long _time;

    private CacheCommand(
        CommandEnvelope envelope,
        CacheCommandKind kind,
        ReadOnlySpan<byte> key = default,
        ReadOnlySpan<byte> value = default,
        SetOptions setOptions = default,
        long time = 0,
        ExpireCondition expireCondition = ExpireCondition.Always,
        long delta = 0,
        int count = 0,
        ReadOnlySpan<byte> items = default)
    {
        Envelope = envelope;
        Kind = kind;
        Key = key;
        Value = value;
        SetOptions = setOptions;
        _time = time;
        ExpireCondition = expireCondition;
        Delta = delta;
        Count = count;
        _items = items;
    }

    public CommandEnvelope Envelope { get; }

    /// <summary>
    /// True for entries of format version 2 and later: a command past its session's first sequence number must find the
    /// session in the table. If it does not, the session expired (or the clock that ages sessions jumped), and the
    /// command may be the retry of a write that already applied under it: it is refused, not applied a second time.
    /// Version 1 entries keep their old meaning (an unknown session is simply started), so an old log replays the same.
    /// </summary>
    public bool RequiresKnownSession { get; private init; }

    /// <summary>
    /// True for entries of format version 5 and later: when the entry takes usage over the memory cap, expired keys are
    /// reclaimed soonest first only until usage is back under it, then keys are evicted as before. Older entries keep their
    /// meaning, every expired key reclaimed at once (however many a wave of expiry left), so an old log replays the same.
    /// </summary>
    public bool ReclaimsExpiredOnlyAsNeeded { get; private init; }

    /// <summary>
    /// True for entries of format version 6 and later: a value that would grow past 512 MiB (APPEND, SETRANGE) is refused
    /// with Redis 7.0's text, <see cref="CacheErrors.StringTooLong"/>. Older entries keep the text earlier builds replied
    /// (<see cref="CacheErrors.StringTooLongBeforeFormat6"/>): a session keeps its last reply, and the reply is part of the
    /// state every replica must hold alike.
    /// </summary>
    public bool UsesRedis7StringLimitText { get; private init; }

    /// <summary>
    /// True for entries of format version 9 and later: a session keeps a reply larger than
    /// <see cref="CacheStateMachine.MaxKeptReplyBytes"/> (a GETDEL of a large value, an EXEC of many GETs) as
    /// <see cref="CacheErrors.ReplyNotKept"/>, for a retry to get. Before, it kept the whole reply: uncounted memory that
    /// outlived a deleted value, and that every snapshot wrote out in full, once per item even where items shared a value
    /// (an EXEC of 10,000 GETs of one 1 MiB value made every snapshot 10 GB larger). Older entries keep every reply whole,
    /// so an old log replays the same.
    /// </summary>
    public bool KeepsLargeRepliesAsErrors { get; private init; }

    public CacheCommandKind Kind { get; }

    /// <summary>The key of every single-key kind (Rename's source), and the last key PurgeExpiredThroughKey removes.</summary>
    public ReadOnlySpan<byte> Key { get; }

    /// <summary>The value of Set, Append and SetRange.</summary>
    public ReadOnlySpan<byte> Value { get; }

    /// <summary>Set's condition, GET flag and expiry.</summary>
    public SetOptions SetOptions { get; }

    /// <summary>The absolute expiry time (unix ms) of Expire, and of GetExpire with <see cref="GetExpiry.At"/>.</summary>
    public long ExpireAtMs => Kind is CacheCommandKind.Expire or CacheCommandKind.GetExpire ? _time : 0;

    /// <summary>What GetExpire does to the expiry.</summary>
    public GetExpiry GetExpiry { get; private init; }

    /// <summary>Rename's new name and Copy's destination (the key renamed or copied is <see cref="Key"/>).</summary>
    public ReadOnlySpan<byte> Destination => Kind is CacheCommandKind.Rename or CacheCommandKind.RenameIfAbsent or CacheCommandKind.Copy ? Value : default;

    /// <summary>SetRange's offset: where the value is written, in bytes from the start (never negative).</summary>
    public long Offset => Kind == CacheCommandKind.SetRange ? _time : 0;

    /// <summary>Copy's REPLACE: the destination may exist, and is overwritten.</summary>
    public bool Replace { get; private init; }

    /// <summary>What a Read answers.</summary>
    public ReadKind ReadKind { get; private init; }

    /// <summary>A GetRange read's start offset, as the client gave it.</summary>
    public long RangeStart => Kind == CacheCommandKind.Read ? _time : 0;

    /// <summary>A GetRange read's end offset (inclusive), as the client gave it.</summary>
    public long RangeEnd { get; private init; }

    /// <summary>A Transaction's commands, in order, decoded as they are enumerated (<see cref="Decode"/> has checked them all).</summary>
    public CommandList Commands => Kind is CacheCommandKind.Transaction or CacheCommandKind.WatchedTransaction ? new CommandList(_items, Count, Envelope, ReadVersion) : default;

    /// <summary>A WatchedTransaction's watched keys (<see cref="Decode"/> has checked them all).</summary>
    public WatchList Watches => Kind == CacheCommandKind.WatchedTransaction ? new WatchList(Value, WatchCount) : default;

    /// <summary>How many keys a WatchedTransaction watches.</summary>
    public int WatchCount { get; private init; }

    /// <summary>The format version the entry was read in (a transaction's commands are read in it too).</summary>
    public byte ReadVersion { get; private init; }

    /// <summary>IncrementByFloat's increment, as the client wrote it.</summary>
    public ReadOnlySpan<byte> FloatIncrement => Kind == CacheCommandKind.IncrementByFloat ? Value : default;

    public ExpireCondition ExpireCondition { get; }

    /// <summary>IncrementBy's signed delta (DECRBY n is encoded as -n by the proposer).</summary>
    public long Delta { get; }

    /// <summary>
    /// The horizon (unix ms) of PurgeExpired, which reclaims the keys whose expiry is at or before it, and of
    /// PurgeExpiredThroughKey, which reclaims those expiring before it and those expiring at it whose bytes sort at or
    /// before <see cref="Key"/>.
    /// </summary>
    public long PurgeUpToMs => Kind is CacheCommandKind.PurgeExpired or CacheCommandKind.PurgeExpiredThroughKey ? _time : 0;

    /// <summary>The number of keys of Delete and Read, of key/value pairs of MultiSet, or of commands of Transaction.</summary>
    public int Count { get; }

    /// <summary>Delete's and Read's keys, in the order given.</summary>
    public KeyList Keys => Kind is CacheCommandKind.Delete or CacheCommandKind.Read ? new KeyList(_items, Count) : default;

    /// <summary>MultiSet's and MultiSetIfNoneExist's pairs, in the order given (a later pair for the same key wins, as in Redis).</summary>
    public PairList Pairs => Kind is CacheCommandKind.MultiSet or CacheCommandKind.MultiSetIfNoneExist ? new PairList(_items, Count) : default;

    /// <summary>
    /// Decodes and fully validates an entry. Throws <see cref="FormatException"/> naming the problem for any malformed input
    /// (and <see cref="UnsupportedCommandVersionException"/>, a FormatException, for a version this build does not know).
    /// </summary>
    public static CacheCommand Decode(ReadOnlySpan<byte> entry)
    {
        var reader = new EntryReader(entry);
        var version = reader.ReadByte("format version");
        if (version is < OldestFormatVersion or > FormatVersion)
        {
            throw new UnsupportedCommandVersionException(version);
        }

        var kindByte = reader.ReadByte("command kind");
        var sessionMustExist = version >= SessionMustExistVersion && (kindByte & SessionMustExistBit) != 0;
        if (version >= SessionMustExistVersion)
        {
            kindByte &= unchecked((byte)~SessionMustExistBit);
        }

        var clientId = reader.ReadUInt64("client id");
        var sequence = reader.ReadVarUInt64("sequence number");
        var nowMs = reader.ReadInt64("timestamp");
        var envelope = new CommandEnvelope(clientId, sequence, nowMs, sessionMustExist);
        if ((CacheCommandKind)kindByte == CacheCommandKind.Read)
        {
            throw EntryReader.Malformed("a read outside a transaction", 1);
        }

        if (version >= KeptReplyLimitVersion && clientId != CommandEnvelope.NoSession && sequence == 0 && (CacheCommandKind)kindByte != CacheCommandKind.RegisterSession)
        {
            // A write of a session numbered 0 would be taken for the retry of the registration (whose sequence is 0),
            // answered from it and not applied. Older formats keep applying it as they did.
            throw EntryReader.Malformed("a session write with sequence number 0 (a session's writes are numbered from 1)", 9);
        }

        return DecodeBody(ref reader, version, kindByte, envelope);
    }

    /// <summary>A transaction's command: u8 kind | body, applied under the transaction's envelope and version.</summary>
    private static CacheCommand DecodeNested(ReadOnlySpan<byte> nested, byte version, CommandEnvelope envelope)
    {
        var reader = new EntryReader(nested);
        var kindByte = reader.ReadByte("transaction command kind");
        if ((CacheCommandKind)kindByte is CacheCommandKind.Transaction or CacheCommandKind.WatchedTransaction or CacheCommandKind.RegisterSession
            or CacheCommandKind.PurgeExpired or CacheCommandKind.PurgeExpiredThroughKey)
        {
            throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"command kind {kindByte} inside a transaction"), 0);
        }

        return DecodeBody(ref reader, version, kindByte, envelope);
    }

    /// <summary>A transaction's commands, checked whole now, so that a malformed command applies none of the others.</summary>
    private static void DecodeNestedCommands(scoped ref EntryReader reader, int count, byte version, CommandEnvelope envelope)
    {
        for (var i = 0; i < count; i++)
        {
            var nestedOffset = reader.Position;
            try
            {
                DecodeNested(reader.ReadBytes("transaction command"), version, envelope);
            }
            catch (FormatException e) when (e is not UnsupportedCommandVersionException)
            {
                // Its offsets count from the command's own start, which the transaction's offset locates.
                const string prefix = "Malformed cache command: ";
                var detail = e.Message.StartsWith(prefix, StringComparison.Ordinal) ? e.Message[prefix.Length..].TrimEnd('.') : e.Message;
                throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"transaction command {i + 1}: {detail}"), nestedOffset);
            }
        }
    }

    private static CacheCommand DecodeBody(scoped ref EntryReader reader, byte version, byte kindByte, CommandEnvelope envelope)
    {
        CacheCommand command;
        switch ((CacheCommandKind)kindByte)
        {
            case CacheCommandKind.Set:
                {
                    var flagsOffset = reader.Position;
                    var flags = reader.ReadByte("SET flags");
                    var condition = (SetCondition)(flags & SetConditionMask);
                    var expiry = (SetExpiry)((flags & SetExpiryMask) >> SetExpiryShift);
                    if ((flags & ~(SetConditionMask | SetReturnOldValueBit | SetExpiryMask)) != 0
                        || condition > SetCondition.IfPresent
                        || expiry > SetExpiry.KeepTtl)
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"invalid SET flags 0x{flags:X2}"), flagsOffset);
                    }

                    var expireAt = expiry == SetExpiry.At ? reader.ReadInt64("SET expiry time") : 0;
                    var key = reader.ReadBytes("SET key");
                    var value = reader.ReadBytes("SET value");
                    var options = new SetOptions(condition, (flags & SetReturnOldValueBit) != 0, expiry, expireAt);
                    command = new CacheCommand(envelope, CacheCommandKind.Set, key, value, options);
                    break;
                }

            case CacheCommandKind.Delete:
                {
                    var count = ReadCount(ref reader, "DEL key count");
                    var start = reader.Position;
                    for (var i = 0; i < count; i++)
                    {
                        reader.ReadBytes("DEL key");
                    }

                    command = new CacheCommand(envelope, CacheCommandKind.Delete, count: count, items: reader.SliceFrom(start));
                    break;
                }

            case CacheCommandKind.Expire:
                {
                    var conditionOffset = reader.Position;
                    var condition = (ExpireCondition)reader.ReadByte("EXPIRE condition");
                    if (!IsValid(condition))
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"invalid EXPIRE condition 0x{(byte)condition:X2}"), conditionOffset);
                    }

                    var expireAt = reader.ReadInt64("EXPIRE time");
                    var key = reader.ReadBytes("EXPIRE key");
                    command = new CacheCommand(envelope, CacheCommandKind.Expire, key, time: expireAt, expireCondition: condition);
                    break;
                }

            case CacheCommandKind.Persist:
                command = new CacheCommand(envelope, CacheCommandKind.Persist, reader.ReadBytes("PERSIST key"));
                break;

            case CacheCommandKind.IncrementBy:
                {
                    var delta = reader.ReadInt64("INCRBY delta");
                    var key = reader.ReadBytes("INCRBY key");
                    command = new CacheCommand(envelope, CacheCommandKind.IncrementBy, key, delta: delta);
                    break;
                }

            case CacheCommandKind.MultiSet:
            case CacheCommandKind.MultiSetIfNoneExist when version >= SessionRegistrationVersion:
                {
                    var count = ReadCount(ref reader, "MSET pair count");
                    var start = reader.Position;
                    for (var i = 0; i < count; i++)
                    {
                        reader.ReadBytes("MSET key");
                        reader.ReadBytes("MSET value");
                    }

                    command = new CacheCommand(envelope, (CacheCommandKind)kindByte, count: count, items: reader.SliceFrom(start));
                    break;
                }

            case CacheCommandKind.PurgeExpired:
                command = new CacheCommand(envelope, CacheCommandKind.PurgeExpired, time: reader.ReadInt64("purge horizon"));
                break;

            case CacheCommandKind.RegisterSession when version >= SessionRegistrationVersion:
                if (!envelope.HasSession || envelope.Sequence != 0)
                {
                    throw EntryReader.Malformed("a session registration needs a client id and sequence 0", 2);
                }

                command = new CacheCommand(envelope, CacheCommandKind.RegisterSession);
                break;

            case CacheCommandKind.GetDelete when version >= SessionRegistrationVersion:
                command = new CacheCommand(envelope, CacheCommandKind.GetDelete, reader.ReadBytes("GETDEL key"));
                break;

            case CacheCommandKind.GetExpire when version >= SessionRegistrationVersion:
                {
                    var expiryOffset = reader.Position;
                    var expiry = (GetExpiry)reader.ReadByte("GETEX expiry");
                    if (expiry is not (GetExpiry.At or GetExpiry.Persist))
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"invalid GETEX expiry {(byte)expiry}"), expiryOffset);
                    }

                    var expireAt = expiry == GetExpiry.At ? reader.ReadInt64("GETEX expiry time") : 0;
                    command = new CacheCommand(envelope, CacheCommandKind.GetExpire, reader.ReadBytes("GETEX key"), time: expireAt) { GetExpiry = expiry };
                    break;
                }

            case CacheCommandKind.Append when version >= SessionRegistrationVersion:
                {
                    var key = reader.ReadBytes("APPEND key");
                    command = new CacheCommand(envelope, CacheCommandKind.Append, key, reader.ReadBytes("APPEND value"));
                    break;
                }

            case CacheCommandKind.IncrementByFloat when version >= SessionRegistrationVersion:
                {
                    var increment = reader.ReadBytes("INCRBYFLOAT increment");
                    command = new CacheCommand(envelope, CacheCommandKind.IncrementByFloat, reader.ReadBytes("INCRBYFLOAT key"), increment);
                    break;
                }

            case CacheCommandKind.FlushAll when version >= SessionRegistrationVersion:
                command = new CacheCommand(envelope, CacheCommandKind.FlushAll);
                break;

            case CacheCommandKind.Rename or CacheCommandKind.RenameIfAbsent when version >= SessionRegistrationVersion:
                {
                    var source = reader.ReadBytes("RENAME source");
                    command = new CacheCommand(envelope, (CacheCommandKind)kindByte, source, reader.ReadBytes("RENAME destination"));
                    break;
                }

            case CacheCommandKind.PurgeExpiredThroughKey when version >= PurgeThroughKeyVersion:
                {
                    var upTo = reader.ReadInt64("purge horizon");
                    command = new CacheCommand(envelope, CacheCommandKind.PurgeExpiredThroughKey, reader.ReadBytes("purge last key"), time: upTo);
                    break;
                }

            case CacheCommandKind.SetRange when version >= SetRangeAndCopyVersion:
                {
                    var offsetPosition = reader.Position;
                    var offset = reader.ReadVarUInt64("SETRANGE offset");
                    if (offset > long.MaxValue)
                    {
                        throw EntryReader.Malformed("SETRANGE offset beyond a signed 64-bit number", offsetPosition);
                    }

                    var key = reader.ReadBytes("SETRANGE key");
                    command = new CacheCommand(envelope, CacheCommandKind.SetRange, key, reader.ReadBytes("SETRANGE value"), time: (long)offset);
                    break;
                }

            case CacheCommandKind.Copy when version >= SetRangeAndCopyVersion:
                {
                    var flagsOffset = reader.Position;
                    var flags = reader.ReadByte("COPY flags");
                    if ((flags & ~CopyReplaceBit) != 0)
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"invalid COPY flags 0x{flags:X2}"), flagsOffset);
                    }

                    var source = reader.ReadBytes("COPY source");
                    command = new CacheCommand(envelope, CacheCommandKind.Copy, source, reader.ReadBytes("COPY destination")) { Replace = (flags & CopyReplaceBit) != 0 };
                    break;
                }

            case CacheCommandKind.WatchedTransaction when version >= WatchVersion:
                {
                    var watchCount = reader.ReadLength("watch count", 3);
                    var watchStart = reader.Position;
                    for (var i = 0; i < watchCount; i++)
                    {
                        reader.ReadVarUInt64("watch applied index");
                        var liveOffset = reader.Position;
                        if (reader.ReadByte("watch liveness") > 1)
                        {
                            throw EntryReader.Malformed("a watch's liveness is neither 0 nor 1", liveOffset);
                        }

                        reader.ReadBytes("watched key");
                    }

                    var watches = reader.SliceFrom(watchStart);
                    var count = reader.ReadLength("transaction command count", 1);
                    var start = reader.Position;
                    DecodeNestedCommands(ref reader, count, version, envelope);
                    command = new CacheCommand(envelope, CacheCommandKind.WatchedTransaction, value: watches, count: count, items: reader.SliceFrom(start)) { WatchCount = watchCount };
                    break;
                }

            case CacheCommandKind.Transaction when version >= TransactionVersion:
                {
                    var count = ReadCount(ref reader, "transaction command count");
                    var start = reader.Position;
                    DecodeNestedCommands(ref reader, count, version, envelope);
                    command = new CacheCommand(envelope, CacheCommandKind.Transaction, count: count, items: reader.SliceFrom(start));
                    break;
                }

            case CacheCommandKind.Read when version >= TransactionVersion:
                {
                    var readOffset = reader.Position;
                    var readKind = (ReadKind)reader.ReadByte("read kind");
                    if (readKind is < ReadKind.Get or > ReadKind.KeyCount)
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"invalid read kind {(byte)readKind}"), readOffset);
                    }

                    var rangeStart = readKind == ReadKind.GetRange ? reader.ReadInt64("GETRANGE start") : 0;
                    var rangeEnd = readKind == ReadKind.GetRange ? reader.ReadInt64("GETRANGE end") : 0;
                    var countOffset = reader.Position;
                    var count = reader.ReadLength("read key count", 1);
                    var expected = readKind switch
                    {
                        ReadKind.KeyCount => count == 0,
                        ReadKind.MultiGet or ReadKind.Exists => count >= 1,
                        _ => count == 1,
                    };
                    if (!expected)
                    {
                        throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"{count} keys for read kind {readKind}"), countOffset);
                    }

                    var start = reader.Position;
                    for (var i = 0; i < count; i++)
                    {
                        reader.ReadBytes("read key");
                    }

                    var keys = reader.SliceFrom(start);
                    var first = count > 0 ? new EntryReader(keys).ReadBytes("read key") : default;
                    command = new CacheCommand(envelope, CacheCommandKind.Read, first, time: rangeStart, count: count, items: keys) { ReadKind = readKind, RangeEnd = rangeEnd };
                    break;
                }

            default:
                throw EntryReader.Malformed(string.Create(CultureInfo.InvariantCulture, $"unknown command kind {kindByte}"), 1);
        }

        reader.RequireEnd();
        return command with
        {
            RequiresKnownSession = version >= 2,
            ReclaimsExpiredOnlyAsNeeded = version >= PurgeThroughKeyVersion,
            UsesRedis7StringLimitText = version >= SetRangeAndCopyVersion,
            KeepsLargeRepliesAsErrors = version >= KeptReplyLimitVersion,
            ReadVersion = version,
        };
    }

    /// <summary>True when <paramref name="condition"/> is a combination Redis 7 accepts: none, NX, XX, GT, LT, XX GT, XX LT.</summary>
    public static bool IsValid(ExpireCondition condition)
    {
        const ExpireCondition all = ExpireCondition.IfNoTtl | ExpireCondition.IfHasTtl | ExpireCondition.IfGreater | ExpireCondition.IfLess;
        if ((condition & ~all) != 0)
        {
            return false;
        }

        if ((condition & ExpireCondition.IfNoTtl) != 0 && condition != ExpireCondition.IfNoTtl)
        {
            return false;
        }

        return (condition & (ExpireCondition.IfGreater | ExpireCondition.IfLess)) != (ExpireCondition.IfGreater | ExpireCondition.IfLess);
    }

    public static void EncodeSet(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, SetOptions options = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (options.Condition > SetCondition.IfPresent || options.Expiry > SetExpiry.KeepTtl)
        {
            throw new ArgumentException("Unknown SET condition or expiry mode.", nameof(options));
        }

        var flags = (byte)((byte)options.Condition | (options.ReturnOldValue ? SetReturnOldValueBit : 0) | ((byte)options.Expiry << SetExpiryShift));
        var size = HeaderSize(envelope) + 1 + (options.Expiry == SetExpiry.At ? 8 : 0) + EntryWriter.BytesSize(key.Length) + EntryWriter.BytesSize(value.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.Set, envelope, out var buffer);
        writer.WriteByte(flags);
        if (options.Expiry == SetExpiry.At)
        {
            writer.WriteInt64(options.ExpireAtMs);
        }

        writer.WriteBytes(key);
        writer.WriteBytes(value);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>DEL of one or more keys.</summary>
    public static void EncodeDelete(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<ReadOnlyMemory<byte>> keys)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (keys.IsEmpty)
        {
            throw new ArgumentException("DEL needs at least one key.", nameof(keys));
        }

        var size = HeaderSize(envelope) + EntryWriter.VarIntSize((ulong)keys.Length);
        foreach (var key in keys)
        {
            size += EntryWriter.BytesSize(key.Length);
        }

        var writer = BeginEntry(output, size, CacheCommandKind.Delete, envelope, out var buffer);
        writer.WriteVarUInt64((ulong)keys.Length);
        foreach (var key in keys)
        {
            writer.WriteBytes(key.Span);
        }

        EndEntry(output, writer, size, buffer);
    }

    /// <summary>EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT, with the time already absolute (unix ms).</summary>
    public static void EncodeExpire(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, long expireAtMs, ExpireCondition condition = ExpireCondition.Always)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (!IsValid(condition))
        {
            throw new ArgumentException("NX and XX, GT or LT options at the same time are not compatible, nor are GT and LT.", nameof(condition));
        }

        var size = HeaderSize(envelope) + 1 + 8 + EntryWriter.BytesSize(key.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.Expire, envelope, out var buffer);
        writer.WriteByte((byte)condition);
        writer.WriteInt64(expireAtMs);
        writer.WriteBytes(key);
        EndEntry(output, writer, size, buffer);
    }

    public static void EncodePersist(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + EntryWriter.BytesSize(key.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.Persist, envelope, out var buffer);
        writer.WriteBytes(key);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>INCRBY (DECRBY n is delta -n; INCR/DECR are +1/-1).</summary>
    public static void EncodeIncrementBy(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, long delta)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + 8 + EntryWriter.BytesSize(key.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.IncrementBy, envelope, out var buffer);
        writer.WriteInt64(delta);
        writer.WriteBytes(key);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>MSET with its arguments as RESP gives them: key1, value1, key2, value2, ...</summary>
    public static void EncodeMultiSet(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<ReadOnlyMemory<byte>> keysAndValues) =>
        EncodeMultiSet(output, envelope, keysAndValues, ifNoneExist: false);

    /// <summary>MSET, or MSETNX when <paramref name="ifNoneExist"/>, with its arguments as RESP gives them.</summary>
    public static void EncodeMultiSet(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<ReadOnlyMemory<byte>> keysAndValues, bool ifNoneExist)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (keysAndValues.IsEmpty || keysAndValues.Length % 2 != 0)
        {
            throw new ArgumentException("MSET needs a non-empty, even number of arguments (key, value, ...).", nameof(keysAndValues));
        }

        var pairCount = keysAndValues.Length / 2;
        var size = HeaderSize(envelope) + EntryWriter.VarIntSize((ulong)pairCount);
        foreach (var item in keysAndValues)
        {
            size += EntryWriter.BytesSize(item.Length);
        }

        var writer = BeginEntry(output, size, ifNoneExist ? CacheCommandKind.MultiSetIfNoneExist : CacheCommandKind.MultiSet, envelope, out var buffer);
        writer.WriteVarUInt64((ulong)pairCount);
        foreach (var item in keysAndValues)
        {
            writer.WriteBytes(item.Span);
        }

        EndEntry(output, writer, size, buffer);
    }

    /// <summary>The leader's periodic purge: reclaim every key whose expiry is at or before <paramref name="upToMs"/> (bounded by the entry's own time).</summary>
    public static void EncodePurgeExpired(IBufferWriter<byte> output, CommandEnvelope envelope, long upToMs)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + 8;
        var writer = BeginEntry(output, size, CacheCommandKind.PurgeExpired, envelope, out var buffer);
        writer.WriteInt64(upToMs);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>
    /// The leader's purge that may stop inside a millisecond (format 5): reclaim every key that expires before
    /// <paramref name="upToMs"/>, and those that expire at it whose bytes sort at or before <paramref name="lastKey"/>
    /// (bounded by the entry's own time).
    /// </summary>
    public static void EncodePurgeExpiredThroughKey(IBufferWriter<byte> output, CommandEnvelope envelope, long upToMs, ReadOnlySpan<byte> lastKey)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + 8 + EntryWriter.BytesSize(lastKey.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.PurgeExpiredThroughKey, envelope, out var buffer);
        writer.WriteInt64(upToMs);
        writer.WriteBytes(lastKey);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>Starts the session of <paramref name="envelope"/>'s client id, which must be nonzero, with sequence 0.</summary>
    public static void EncodeRegisterSession(IBufferWriter<byte> output, CommandEnvelope envelope)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (!envelope.HasSession || envelope.Sequence != 0)
        {
            throw new ArgumentException("A session registration needs a client id and sequence 0.", nameof(envelope));
        }

        var size = HeaderSize(envelope);
        var writer = BeginEntry(output, size, CacheCommandKind.RegisterSession, envelope, out var buffer);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>GETDEL key.</summary>
    public static void EncodeGetDelete(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key) =>
        EncodeKeyAndBytes(output, envelope, CacheCommandKind.GetDelete, key, default, withBytes: false);

    /// <summary>GETEX key with an absolute expiry (<see cref="GetExpiry.At"/>) or PERSIST.</summary>
    public static void EncodeGetExpire(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, GetExpiry expiry, long expireAtMs = 0)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (expiry is not (GetExpiry.At or GetExpiry.Persist))
        {
            throw new ArgumentException("Unknown GETEX expiry.", nameof(expiry));
        }

        var size = HeaderSize(envelope) + 1 + (expiry == GetExpiry.At ? 8 : 0) + EntryWriter.BytesSize(key.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.GetExpire, envelope, out var buffer);
        writer.WriteByte((byte)expiry);
        if (expiry == GetExpiry.At)
        {
            writer.WriteInt64(expireAtMs);
        }

        writer.WriteBytes(key);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>APPEND key value.</summary>
    public static void EncodeAppend(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, ReadOnlySpan<byte> value) =>
        EncodeKeyAndBytes(output, envelope, CacheCommandKind.Append, key, value, withBytes: true);

    /// <summary>INCRBYFLOAT key increment; the proposer has checked that the increment is a float (<see cref="IsValidFloat"/>).</summary>
    public static void EncodeIncrementByFloat(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, ReadOnlySpan<byte> increment) =>
        EncodeKeyAndBytes(output, envelope, CacheCommandKind.IncrementByFloat, increment, key, withBytes: true);

    /// <summary>RENAME / RENAMENX source destination.</summary>
    public static void EncodeRename(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, bool ifAbsent) =>
        EncodeKeyAndBytes(output, envelope, ifAbsent ? CacheCommandKind.RenameIfAbsent : CacheCommandKind.Rename, source, destination, withBytes: true);

    /// <summary>SETRANGE key offset value; the proposer has checked that the offset is not negative.</summary>
    public static void EncodeSetRange(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> key, long offset, ReadOnlySpan<byte> value)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        var size = HeaderSize(envelope) + EntryWriter.VarIntSize((ulong)offset) + EntryWriter.BytesSize(key.Length) + EntryWriter.BytesSize(value.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.SetRange, envelope, out var buffer);
        writer.WriteVarUInt64((ulong)offset);
        writer.WriteBytes(key);
        writer.WriteBytes(value);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>COPY source destination [REPLACE] (the same database).</summary>
    public static void EncodeCopy(IBufferWriter<byte> output, CommandEnvelope envelope, ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, bool replace)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + 1 + EntryWriter.BytesSize(source.Length) + EntryWriter.BytesSize(destination.Length);
        var writer = BeginEntry(output, size, CacheCommandKind.Copy, envelope, out var buffer);
        writer.WriteByte(replace ? CopyReplaceBit : (byte)0);
        writer.WriteBytes(source);
        writer.WriteBytes(destination);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>
    /// A read answered at apply time, as a Read entry. Only a transaction may carry it (<see cref="EncodeTransaction"/>):
    /// <see cref="Decode"/> refuses it alone. <paramref name="keys"/> as the read takes them (none for KeyCount).
    /// </summary>
    public static void EncodeRead(IBufferWriter<byte> output, CommandEnvelope envelope, ReadKind kind, ReadOnlySpan<ReadOnlyMemory<byte>> keys, long rangeStart = 0, long rangeEnd = 0)
    {
        ArgumentNullException.ThrowIfNull(output);
        var keysAllowed = kind switch
        {
            ReadKind.KeyCount => keys.IsEmpty,
            ReadKind.MultiGet or ReadKind.Exists => !keys.IsEmpty,
            >= ReadKind.Get and <= ReadKind.KeyCount => keys.Length == 1,
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown read kind"),
        };
        if (!keysAllowed)
        {
            throw new ArgumentException($"{keys.Length} keys for a {kind} read", nameof(keys));
        }

        var size = HeaderSize(envelope) + 1 + (kind == ReadKind.GetRange ? 16 : 0) + EntryWriter.VarIntSize((ulong)keys.Length);
        foreach (var key in keys)
        {
            size += EntryWriter.BytesSize(key.Length);
        }

        var writer = BeginEntry(output, size, CacheCommandKind.Read, envelope, out var buffer);
        writer.WriteByte((byte)kind);
        if (kind == ReadKind.GetRange)
        {
            writer.WriteInt64(rangeStart);
            writer.WriteInt64(rangeEnd);
        }

        writer.WriteVarUInt64((ulong)keys.Length);
        foreach (var key in keys)
        {
            writer.WriteBytes(key.Span);
        }

        EndEntry(output, writer, size, buffer);
    }

    /// <summary>
    /// MULTI/EXEC: <paramref name="commands"/>, each encoded as its own entry by the encoders here (their envelopes are
    /// dropped: the transaction's applies), in one Transaction entry.
    /// </summary>
    public static void EncodeTransaction(IBufferWriter<byte> output, CommandEnvelope envelope, IReadOnlyList<ReadOnlyMemory<byte>> commands)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(commands);
        if (commands.Count == 0)
        {
            throw new ArgumentException("A transaction needs at least one command.", nameof(commands));
        }

        var size = HeaderSize(envelope) + EntryWriter.VarIntSize((ulong)commands.Count);
        foreach (var command in commands)
        {
            size += EntryWriter.BytesSize(1 + BodyOf(command.Span, out _).Length);
        }

        var writer = BeginEntry(output, size, CacheCommandKind.Transaction, envelope, out var buffer);
        writer.WriteVarUInt64((ulong)commands.Count);
        foreach (var command in commands)
        {
            var body = BodyOf(command.Span, out var kind);
            writer.WriteVarUInt64((ulong)(1 + body.Length));
            writer.WriteByte((byte)kind);
            writer.WriteRaw(body);
        }

        EndEntry(output, writer, size, buffer);
    }

    /// <summary>
    /// MULTI/EXEC after WATCH: the <paramref name="watches"/> checked first, then <paramref name="commands"/> (none is
    /// allowed) as <see cref="EncodeTransaction"/> carries them, in one WatchedTransaction entry.
    /// </summary>
    public static void EncodeWatchedTransaction(IBufferWriter<byte> output, CommandEnvelope envelope, IReadOnlyList<WatchedKey> watches, IReadOnlyList<ReadOnlyMemory<byte>> commands)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(watches);
        ArgumentNullException.ThrowIfNull(commands);
        var size = HeaderSize(envelope) + EntryWriter.VarIntSize((ulong)watches.Count) + EntryWriter.VarIntSize((ulong)commands.Count);
        foreach (var watch in watches)
        {
            size += EntryWriter.VarIntSize(watch.WatchedAt) + 1 + EntryWriter.BytesSize(watch.Key.Length);
        }

        foreach (var command in commands)
        {
            size += EntryWriter.BytesSize(1 + BodyOf(command.Span, out _).Length);
        }

        var writer = BeginEntry(output, size, CacheCommandKind.WatchedTransaction, envelope, out var buffer);
        writer.WriteVarUInt64((ulong)watches.Count);
        foreach (var watch in watches)
        {
            writer.WriteVarUInt64(watch.WatchedAt);
            writer.WriteByte(watch.WasLive ? (byte)1 : (byte)0);
            writer.WriteBytes(watch.Key.Span);
        }

        writer.WriteVarUInt64((ulong)commands.Count);
        foreach (var command in commands)
        {
            var body = BodyOf(command.Span, out var kind);
            writer.WriteVarUInt64((ulong)(1 + body.Length));
            writer.WriteByte((byte)kind);
            writer.WriteRaw(body);
        }

        EndEntry(output, writer, size, buffer);
    }

    /// <summary>An encoded entry's body (what follows its envelope) and kind; the kinds a transaction cannot carry throw.</summary>
    private static ReadOnlySpan<byte> BodyOf(ReadOnlySpan<byte> entry, out CacheCommandKind kind)
    {
        var reader = new EntryReader(entry);
        if (reader.ReadByte("format version") != FormatVersion)
        {
            throw new ArgumentException("not an entry encoded by this build", nameof(entry));
        }

        kind = (CacheCommandKind)(reader.ReadByte("command kind") & ~SessionMustExistBit);
        if (kind is CacheCommandKind.Transaction or CacheCommandKind.WatchedTransaction or CacheCommandKind.RegisterSession or CacheCommandKind.PurgeExpired or CacheCommandKind.PurgeExpiredThroughKey)
        {
            throw new ArgumentException($"a {kind} entry cannot go in a transaction", nameof(entry));
        }

        reader.ReadUInt64("client id");
        reader.ReadVarUInt64("sequence number");
        reader.ReadInt64("timestamp");
        return entry[reader.Position..];
    }

    /// <summary>FLUSHALL.</summary>
    public static void EncodeFlushAll(IBufferWriter<byte> output, CommandEnvelope envelope)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope);
        var writer = BeginEntry(output, size, CacheCommandKind.FlushAll, envelope, out var buffer);
        EndEntry(output, writer, size, buffer);
    }

    /// <summary>True when INCRBYFLOAT would take <paramref name="text"/> as a number (Redis's rules; see the cache README).</summary>
    public static bool IsValidFloat(ReadOnlySpan<byte> text) => FloatFormat.IsRedisFloat(text);

    // The bodies that are one or two length-prefixed byte strings.
    private static void EncodeKeyAndBytes(IBufferWriter<byte> output, CommandEnvelope envelope, CacheCommandKind kind, ReadOnlySpan<byte> first, ReadOnlySpan<byte> second, bool withBytes)
    {
        ArgumentNullException.ThrowIfNull(output);
        var size = HeaderSize(envelope) + EntryWriter.BytesSize(first.Length) + (withBytes ? EntryWriter.BytesSize(second.Length) : 0);
        var writer = BeginEntry(output, size, kind, envelope, out var buffer);
        writer.WriteBytes(first);
        if (withBytes)
        {
            writer.WriteBytes(second);
        }

        EndEntry(output, writer, size, buffer);
    }

    private static int ReadCount(ref EntryReader reader, string field)
    {
        var offset = reader.Position;

        // Every key or pair takes at least one byte (its length prefix), which bounds the count by the bytes left.
        var count = reader.ReadLength(field, 1);
        if (count == 0)
        {
            throw EntryReader.Malformed(field + " is zero", offset);
        }

        return count;
    }

    private static int HeaderSize(CommandEnvelope envelope) => FixedHeaderSize + EntryWriter.VarIntSize(envelope.Sequence);

    private static EntryWriter BeginEntry(IBufferWriter<byte> output, int size, CacheCommandKind kind, CommandEnvelope envelope, out Span<byte> buffer)
    {
        buffer = output.GetSpan(size)[..size];
        var writer = new EntryWriter(buffer);
        writer.WriteByte(FormatVersion);
        writer.WriteByte(envelope.SessionMustExist && envelope.HasSession ? (byte)((byte)kind | SessionMustExistBit) : (byte)kind);
        writer.WriteUInt64(envelope.ClientId);
        writer.WriteVarUInt64(envelope.Sequence);
        writer.WriteInt64(envelope.NowMs);
        return writer;
    }

    private static void EndEntry(IBufferWriter<byte> output, EntryWriter writer, int size, Span<byte> buffer)
    {
        // The size arithmetic and the writes must agree exactly, or the entry would carry garbage or be cut short.
        if (writer.Position != size || buffer.Length != size)
        {
            throw new InvalidOperationException("Cache command size miscalculated.");
        }

        output.Advance(size);
    }

    /// <summary>Delete's keys as slices of the entry.</summary>
    public readonly ref struct KeyList
    {
        private readonly ReadOnlySpan<byte> _encoded;

        internal KeyList(ReadOnlySpan<byte> encoded, int count)
        {
            _encoded = encoded;
            Count = count;
        }

        public int Count { get; }

        public Enumerator GetEnumerator() => new(_encoded, Count);

        public ref struct Enumerator
        {
            private EntryReader _reader;
            private int _left;

            internal Enumerator(ReadOnlySpan<byte> encoded, int count)
            {
                _reader = new EntryReader(encoded);
                _left = count;
                Current = default;
            }

            public ReadOnlySpan<byte> Current { get; private set; }

            public bool MoveNext()
            {
                if (_left == 0)
                {
                    return false;
                }

                _left--;
                Current = _reader.ReadBytes("DEL key");
                return true;
            }
        }
    }

    /// <summary>A Transaction's commands as slices of the entry, decoded one at a time.</summary>
    public readonly ref struct CommandList
    {
        private readonly ReadOnlySpan<byte> _encoded;
        private readonly CommandEnvelope _envelope;
        private readonly byte _version;

        internal CommandList(ReadOnlySpan<byte> encoded, int count, CommandEnvelope envelope, byte version)
        {
            _encoded = encoded;
            Count = count;
            _envelope = envelope;
            _version = version;
        }

        public int Count { get; }

        public Enumerator GetEnumerator() => new(_encoded, Count, _envelope, _version);

        public ref struct Enumerator
        {
            private readonly CommandEnvelope _envelope;
            private readonly byte _version;
            private EntryReader _reader;
            private int _left;

            internal Enumerator(ReadOnlySpan<byte> encoded, int count, CommandEnvelope envelope, byte version)
            {
                _reader = new EntryReader(encoded);
                _left = count;
                _envelope = envelope;
                _version = version;
                Current = default;
            }

            public CacheCommand Current { get; private set; }

            public bool MoveNext()
            {
                if (_left == 0)
                {
                    return false;
                }

                _left--;
                Current = DecodeNested(_reader.ReadBytes("transaction command"), _version, _envelope);
                return true;
            }
        }
    }

    /// <summary>A WatchedTransaction's watched keys as slices of the entry.</summary>
    public readonly ref struct WatchList
    {
        private readonly ReadOnlySpan<byte> _encoded;

        internal WatchList(ReadOnlySpan<byte> encoded, int count)
        {
            _encoded = encoded;
            Count = count;
        }

        public int Count { get; }

        public Enumerator GetEnumerator() => new(_encoded, Count);

        public ref struct Enumerator
        {
            private EntryReader _reader;
            private int _left;

            internal Enumerator(ReadOnlySpan<byte> encoded, int count)
            {
                _reader = new EntryReader(encoded);
                _left = count;
                Current = default;
            }

            public Watch Current { get; private set; }

            public bool MoveNext()
            {
                if (_left == 0)
                {
                    return false;
                }

                _left--;
                var watchedAt = _reader.ReadVarUInt64("watch applied index");
                var wasLive = _reader.ReadByte("watch liveness") == 1;
                Current = new Watch(_reader.ReadBytes("watched key"), watchedAt, wasLive);
                return true;
            }
        }
    }

    /// <summary>One watched key: the applied index its WATCH read it at, and whether it was live (present, unexpired) then.</summary>
    public readonly ref struct Watch
    {
        internal Watch(ReadOnlySpan<byte> key, ulong watchedAt, bool wasLive)
        {
            Key = key;
            WatchedAt = watchedAt;
            WasLive = wasLive;
        }

        public ReadOnlySpan<byte> Key { get; }

        public ulong WatchedAt { get; }

        public bool WasLive { get; }
    }

    /// <summary>One MultiSet pair.</summary>
    public readonly ref struct KeyValue
    {
        internal KeyValue(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
        {
            Key = key;
            Value = value;
        }

        public ReadOnlySpan<byte> Key { get; }

        public ReadOnlySpan<byte> Value { get; }
    }

    /// <summary>MultiSet's pairs as slices of the entry.</summary>
    public readonly ref struct PairList
    {
        private readonly ReadOnlySpan<byte> _encoded;

        internal PairList(ReadOnlySpan<byte> encoded, int count)
        {
            _encoded = encoded;
            Count = count;
        }

        public int Count { get; }

        public Enumerator GetEnumerator() => new(_encoded, Count);

        public ref struct Enumerator
        {
            private EntryReader _reader;
            private int _left;

            internal Enumerator(ReadOnlySpan<byte> encoded, int count)
            {
                _reader = new EntryReader(encoded);
                _left = count;
                Current = default;
            }

            public KeyValue Current { get; private set; }

            public bool MoveNext()
            {
                if (_left == 0)
                {
                    return false;
                }

                _left--;
                var key = _reader.ReadBytes("MSET key");
                var value = _reader.ReadBytes("MSET value");
                Current = new KeyValue(key, value);
                return true;
            }
        }
    }
}

/// <summary>An entry written in a command format version this build does not know: the node must not guess how to apply it.</summary>
public sealed class UnsupportedCommandVersionException : FormatException
{
    public UnsupportedCommandVersionException(byte version)
        : base(string.Create(CultureInfo.InvariantCulture, $"Malformed cache command: format version {version} is not supported (this build reads versions {CacheCommand.OldestFormatVersion} to {CacheCommand.FormatVersion}); upgrade this node."))
    {
        Version = version;
    }

    public byte Version { get; }
}
