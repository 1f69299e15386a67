using System.Buffers;
using System.Text;
using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

/// <summary>Builds encoded command entries from readable strings.</summary>
internal static class Entries
{
    public static readonly CommandEnvelope NoSession = new(CommandEnvelope.NoSession, 0, 1_000);

    public static byte[] B(string text) => Encoding.UTF8.GetBytes(text);

    public static ReadOnlyMemory<byte>[] Keys(params string[] keys) => Array.ConvertAll(keys, k => (ReadOnlyMemory<byte>)B(k));

    public static byte[] Set(CommandEnvelope envelope, string key, string value, SetOptions options = default) =>
        Encode(w => CacheCommand.EncodeSet(w, envelope, B(key), B(value), options));

    public static byte[] Delete(CommandEnvelope envelope, params string[] keys) =>
        Encode(w => CacheCommand.EncodeDelete(w, envelope, Keys(keys)));

    public static byte[] Expire(CommandEnvelope envelope, string key, long expireAtMs, ExpireCondition condition = ExpireCondition.Always) =>
        Encode(w => CacheCommand.EncodeExpire(w, envelope, B(key), expireAtMs, condition));

    public static byte[] Persist(CommandEnvelope envelope, string key) =>
        Encode(w => CacheCommand.EncodePersist(w, envelope, B(key)));

    public static byte[] IncrementBy(CommandEnvelope envelope, string key, long delta) =>
        Encode(w => CacheCommand.EncodeIncrementBy(w, envelope, B(key), delta));

    public static byte[] MultiSet(CommandEnvelope envelope, params string[] keysAndValues) =>
        Encode(w => CacheCommand.EncodeMultiSet(w, envelope, Keys(keysAndValues)));

    public static byte[] PurgeExpired(CommandEnvelope envelope, long upToMs) =>
        Encode(w => CacheCommand.EncodePurgeExpired(w, envelope, upToMs));

    public static byte[] PurgeExpiredThroughKey(CommandEnvelope envelope, long upToMs, ReadOnlySpan<byte> lastKey)
    {
        var buffer = new ArrayBufferWriter<byte>();
        CacheCommand.EncodePurgeExpiredThroughKey(buffer, envelope, upToMs, lastKey);
        return buffer.WrittenSpan.ToArray();
    }

    public static byte[] RegisterSession(ulong clientId, long nowMs = 1_000) =>
        Encode(w => CacheCommand.EncodeRegisterSession(w, new CommandEnvelope(clientId, 0, nowMs)));

    public static byte[] GetDelete(CommandEnvelope envelope, string key) =>
        Encode(w => CacheCommand.EncodeGetDelete(w, envelope, B(key)));

    public static byte[] GetExpire(CommandEnvelope envelope, string key, GetExpiry expiry, long expireAtMs = 0) =>
        Encode(w => CacheCommand.EncodeGetExpire(w, envelope, B(key), expiry, expireAtMs));

    public static byte[] Append(CommandEnvelope envelope, string key, string value) =>
        Encode(w => CacheCommand.EncodeAppend(w, envelope, B(key), B(value)));

    public static byte[] IncrementByFloat(CommandEnvelope envelope, string key, string increment) =>
        Encode(w => CacheCommand.EncodeIncrementByFloat(w, envelope, B(key), B(increment)));

    public static byte[] MultiSetIfNoneExist(CommandEnvelope envelope, params string[] keysAndValues) =>
        Encode(w => CacheCommand.EncodeMultiSet(w, envelope, Keys(keysAndValues), ifNoneExist: true));

    public static byte[] FlushAll(CommandEnvelope envelope) => Encode(w => CacheCommand.EncodeFlushAll(w, envelope));

    public static byte[] Rename(CommandEnvelope envelope, string source, string destination, bool ifAbsent = false) =>
        Encode(w => CacheCommand.EncodeRename(w, envelope, B(source), B(destination), ifAbsent));

    public static byte[] SetRange(CommandEnvelope envelope, string key, long offset, string value) =>
        Encode(w => CacheCommand.EncodeSetRange(w, envelope, B(key), offset, B(value)));

    public static byte[] Copy(CommandEnvelope envelope, string source, string destination, bool replace = false) =>
        Encode(w => CacheCommand.EncodeCopy(w, envelope, B(source), B(destination), replace));

    /// <summary>A read for a transaction (no key for KeyCount).</summary>
    public static byte[] Read(ReadKind kind, params string[] keys) =>
        Encode(w => CacheCommand.EncodeRead(w, NoSession, kind, Keys(keys)));

    public static byte[] GetRange(string key, long start, long end) =>
        Encode(w => CacheCommand.EncodeRead(w, NoSession, ReadKind.GetRange, Keys(key), start, end));

    /// <summary>MULTI/EXEC of entries encoded alone (their envelopes are dropped).</summary>
    public static byte[] Transaction(CommandEnvelope envelope, params byte[][] commands) =>
        Encode(w => CacheCommand.EncodeTransaction(w, envelope, Array.ConvertAll(commands, c => (ReadOnlyMemory<byte>)c)));

    /// <summary>MULTI/EXEC after WATCH: the watches checked first, then the commands (none is allowed).</summary>
    public static byte[] WatchedTransaction(CommandEnvelope envelope, WatchedKey[] watches, params byte[][] commands) =>
        Encode(w => CacheCommand.EncodeWatchedTransaction(w, envelope, watches, Array.ConvertAll(commands, c => (ReadOnlyMemory<byte>)c)));

    public static byte[] Encode(Action<IBufferWriter<byte>> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }
}

/// <summary>
/// A state machine plus the bookkeeping a test would otherwise repeat: the next log index, and a leader clock that the
/// test moves explicitly. Commands go without a session unless a client id is given.
/// </summary>
internal sealed class CacheHarness
{

    public CacheHarness(CacheStateMachineOptions? options = null)
    {
        Machine = new CacheStateMachine(options);
    }

    public CacheStateMachine Machine { get; }

    /// <summary>The leader's clock stamped into the next entries (unix ms).</summary>
    public long NowMs { get; set; } = 1_000_000;

    public CommandEnvelope Envelope(ulong clientId = CommandEnvelope.NoSession, ulong sequence = 0) => new(clientId, sequence, NowMs);

    /// <summary>Applies the entry at the next log index (after a snapshot load, the one after the snapshot's).</summary>
    public CacheReply Apply(byte[] entry) => Machine.Apply(Machine.AppliedIndex + 1, entry);

    public CacheReply Set(string key, string value, SetOptions options = default) => Apply(Entries.Set(Envelope(), key, value, options));

    public CacheReply SetExpiringIn(string key, string value, long ttlMs) => Set(key, value, SetOptions.ExpiringAt(NowMs + ttlMs));

    public CacheReply Delete(params string[] keys) => Apply(Entries.Delete(Envelope(), keys));

    public CacheReply Expire(string key, long expireAtMs, ExpireCondition condition = ExpireCondition.Always) =>
        Apply(Entries.Expire(Envelope(), key, expireAtMs, condition));

    public CacheReply Persist(string key) => Apply(Entries.Persist(Envelope(), key));

    public CacheReply IncrementBy(string key, long delta) => Apply(Entries.IncrementBy(Envelope(), key, delta));

    public CacheReply MultiSet(params string[] keysAndValues) => Apply(Entries.MultiSet(Envelope(), keysAndValues));

    public CacheReply Purge(long upToMs) => Apply(Entries.PurgeExpired(Envelope(), upToMs));

    public CacheReply PurgeThrough(long upToMs, string lastKey) => Apply(Entries.PurgeExpiredThroughKey(Envelope(), upToMs, Entries.B(lastKey)));

    /// <summary>GET at the current clock, as a string (null when absent).</summary>
    public string? Get(string key) => Get(key, NowMs);

    public string? Get(string key, long nowMs) =>
        Machine.TryGet(Entries.B(key), nowMs, out var value) ? Encoding.UTF8.GetString(value.Span) : null;

    public long Pttl(string key) => Machine.TimeToLiveMs(Entries.B(key), NowMs);
}

internal static class Replies
{
    public static CacheReply Int(long value) => CacheReply.FromInteger(value);

    public static CacheReply Bulk(string value) => CacheReply.FromBulk(Entries.B(value));

    public static CacheReply Error(string message) => CacheReply.FromError(message);
}
