using System.Buffers;
using Dcache.Cache;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Services;

/// <summary>
/// Turns a gateway's write command into the bytes of a Raft entry. Runs on the leader at proposal time, which is
/// where relative expiries become absolute: every replica then applies the same absolute time.
/// </summary>
public static class WriteEncoder
{
    /// <summary>
    /// The write's log entry kind and its Redis name (for errors): a kind newer than the format some member reads must
    /// not be proposed (see <see cref="CacheCommand.MinimumFormatVersion"/>).
    /// </summary>
    public static (CacheCommandKind Kind, string Name) KindOf(Proto.Command command) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.Set => (CacheCommandKind.Set, "SET"),
        Proto.Command.OpOneofCase.Del => (CacheCommandKind.Delete, "DEL"),
        Proto.Command.OpOneofCase.Mset => (CacheCommandKind.MultiSet, "MSET"),
        Proto.Command.OpOneofCase.IncrBy => (CacheCommandKind.IncrementBy, "INCRBY"),
        Proto.Command.OpOneofCase.Expire => (CacheCommandKind.Expire, "EXPIRE"),
        Proto.Command.OpOneofCase.Persist => (CacheCommandKind.Persist, "PERSIST"),
        Proto.Command.OpOneofCase.RegisterSession => (CacheCommandKind.RegisterSession, "a session registration"),
        Proto.Command.OpOneofCase.Getdel => (CacheCommandKind.GetDelete, "GETDEL"),
        Proto.Command.OpOneofCase.Getex => (CacheCommandKind.GetExpire, "GETEX"),
        Proto.Command.OpOneofCase.Append => (CacheCommandKind.Append, "APPEND"),
        Proto.Command.OpOneofCase.IncrByFloat => (CacheCommandKind.IncrementByFloat, "INCRBYFLOAT"),
        Proto.Command.OpOneofCase.Msetnx => (CacheCommandKind.MultiSetIfNoneExist, "MSETNX"),
        Proto.Command.OpOneofCase.Flushall => (CacheCommandKind.FlushAll, "FLUSHALL"),
        Proto.Command.OpOneofCase.Rename when command.Rename.IfAbsent => (CacheCommandKind.RenameIfAbsent, "RENAMENX"),
        Proto.Command.OpOneofCase.Rename => (CacheCommandKind.Rename, "RENAME"),
        Proto.Command.OpOneofCase.Setrange => (CacheCommandKind.SetRange, "SETRANGE"),
        Proto.Command.OpOneofCase.Copy => (CacheCommandKind.Copy, "COPY"),
        Proto.Command.OpOneofCase.Transaction when command.Transaction.Watched => (CacheCommandKind.WatchedTransaction, "WATCH"),
        Proto.Command.OpOneofCase.Transaction => (CacheCommandKind.Transaction, "MULTI/EXEC"),
        _ => throw new ArgumentException($"{command.OpCase} is not a write", nameof(command)),
    };

    /// <summary>Validates the command; null when it can be proposed, else the reason for an INVALID_REQUEST reply.</summary>
    public static string? Validate(Proto.Command command) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.None => "command without an operation",
        // Sequence 0 is a session's registration: a write numbered 0 would be answered from it and not applied.
        not Proto.Command.OpOneofCase.RegisterSession when command.ClientId != CommandEnvelope.NoSession && command.Sequence == 0 => "a session's writes are numbered from 1 (0 is its registration)",
        Proto.Command.OpOneofCase.Transaction => ValidateTransaction(command.Transaction),
        Proto.Command.OpOneofCase.RegisterSession when command.ClientId == CommandEnvelope.NoSession || command.Sequence != 0 => "a session registration needs a client id and sequence 0",
        // Protobuf enums are open: a value the protocol does not define would make the encoder throw on the driver loop.
        Proto.Command.OpOneofCase.Set when !Enum.IsDefined(command.Set.Condition) => $"unknown set condition {(int)command.Set.Condition}",
        Proto.Command.OpOneofCase.Set when command.Set.ExpiryCase == Proto.SetRequest.ExpiryOneofCase.TtlMs && command.Set.TtlMs <= 0 => "ERR invalid expire time in 'set' command",
        Proto.Command.OpOneofCase.Set when command.Set.ExpiryCase == Proto.SetRequest.ExpiryOneofCase.ExpireAtMs && command.Set.ExpireAtMs <= 0 => "ERR invalid expire time in 'set' command",
        Proto.Command.OpOneofCase.Del when command.Del.Keys.Count == 0 => "ERR wrong number of arguments for 'del' command",
        Proto.Command.OpOneofCase.Mset when command.Mset.Keys.Count == 0 || command.Mset.Keys.Count != command.Mset.Values.Count => "ERR wrong number of arguments for 'mset' command",
        Proto.Command.OpOneofCase.Expire when !Enum.IsDefined(command.Expire.Condition) => $"unknown expire condition {(int)command.Expire.Condition}",
        Proto.Command.OpOneofCase.Expire when !CacheCommand.IsValid((ExpireCondition)ExpireConditionOf(command.Expire.Condition)) => "ERR NX and XX, GT or LT options at the same time are not compatible",
        Proto.Command.OpOneofCase.Expire when command.Expire.WhenCase == Proto.ExpireRequest.WhenOneofCase.None => "ERR wrong number of arguments for 'expire' command",
        Proto.Command.OpOneofCase.Msetnx when command.Msetnx.Keys.Count == 0 || command.Msetnx.Keys.Count != command.Msetnx.Values.Count => "ERR wrong number of arguments for 'msetnx' command",
        Proto.Command.OpOneofCase.Getex when command.Getex.ExpiryCase == Proto.GetExRequest.ExpiryOneofCase.None || (command.Getex.ExpiryCase == Proto.GetExRequest.ExpiryOneofCase.Persist && !command.Getex.Persist) => "GETEX needs an expiry option or PERSIST (without one it is a GET)",
        Proto.Command.OpOneofCase.Getex when command.Getex.ExpiryCase == Proto.GetExRequest.ExpiryOneofCase.TtlMs && command.Getex.TtlMs <= 0 => "ERR invalid expire time in 'getex' command",
        Proto.Command.OpOneofCase.Getex when command.Getex.ExpiryCase == Proto.GetExRequest.ExpiryOneofCase.ExpireAtMs && command.Getex.ExpireAtMs <= 0 => "ERR invalid expire time in 'getex' command",
        Proto.Command.OpOneofCase.IncrByFloat when !CacheCommand.IsValidFloat(command.IncrByFloat.Increment.Span) => CacheErrors.NotAFloat,
        Proto.Command.OpOneofCase.Exists when command.Exists.Keys.Count == 0 => "ERR wrong number of arguments for 'exists' command",
        Proto.Command.OpOneofCase.Mget when command.Mget.Keys.Count == 0 => "ERR wrong number of arguments for 'mget' command",
        Proto.Command.OpOneofCase.Scan when command.Scan.Count == 0 => "ERR syntax error",
        Proto.Command.OpOneofCase.Setrange when command.Setrange.Offset < 0 => "ERR offset is out of range",
        _ => null,
    };

    /// <summary>The commands a transaction may carry: every write but a session registration, and the reads of one step.</summary>
    public static bool MayGoInTransaction(Proto.Command command) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.RegisterSession or Proto.Command.OpOneofCase.Transaction or Proto.Command.OpOneofCase.Watch or Proto.Command.OpOneofCase.None => false,
        _ when command.IsWrite => true,
        _ => ReadKindOf(command) is not null,
    };

    private static string? ValidateTransaction(Proto.TransactionRequest transaction)
    {
        if (transaction.Commands.Count == 0 && !transaction.Watched)
        {
            return "a transaction without commands";
        }

        if (transaction.Watches.Count > 0 && !transaction.Watched)
        {
            return "a transaction with watches must be marked watched";
        }

        for (var i = 0; i < transaction.Commands.Count; i++)
        {
            var command = transaction.Commands[i];
            if (!MayGoInTransaction(command))
            {
                return $"transaction command {i + 1}: {command.OpCase} cannot go in a transaction";
            }

            // An increment that is not a float is the slot's error, not the transaction's (see EncodeTransaction).
            if (command.OpCase != Proto.Command.OpOneofCase.IncrByFloat && Validate(command) is { } invalid)
            {
                return invalid.StartsWith("ERR ", StringComparison.Ordinal) ? invalid : $"transaction command {i + 1}: {invalid}";
            }
        }

        return null;
    }

    /// <summary>The read a transaction carries for <paramref name="command"/>; null for a write or a read it cannot carry.</summary>
    private static ReadKind? ReadKindOf(Proto.Command command) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.Get => ReadKind.Get,
        Proto.Command.OpOneofCase.Mget => ReadKind.MultiGet,
        Proto.Command.OpOneofCase.Exists => ReadKind.Exists,
        Proto.Command.OpOneofCase.Ttl => command.Ttl.Milliseconds ? ReadKind.TimeToLiveMilliseconds : ReadKind.TimeToLiveSeconds,
        Proto.Command.OpOneofCase.Expiretime => command.Expiretime.Milliseconds ? ReadKind.ExpireTimeMilliseconds : ReadKind.ExpireTimeSeconds,
        Proto.Command.OpOneofCase.Strlen => ReadKind.StringLength,
        Proto.Command.OpOneofCase.Getrange => ReadKind.GetRange,
        Proto.Command.OpOneofCase.Type => ReadKind.Type,
        Proto.Command.OpOneofCase.Dbsize => ReadKind.KeyCount,
        _ => null,
    };

    private static void EncodeTransaction(Proto.TransactionRequest transaction, CommandEnvelope envelope, IBufferWriter<byte> output)
    {
        // Each command is encoded alone as it would be proposed, at the same time; the transaction's envelope replaces theirs.
        var commands = new ReadOnlyMemory<byte>[transaction.Commands.Count];
        var alone = new CommandEnvelope(CommandEnvelope.NoSession, 0, envelope.NowMs);
        for (var i = 0; i < commands.Length; i++)
        {
            var command = transaction.Commands[i];
            var buffer = new ArrayBufferWriter<byte>();
            if (command.OpCase == Proto.Command.OpOneofCase.IncrByFloat && !CacheCommand.IsValidFloat(command.IncrByFloat.Increment.Span))
            {
                // Redis queues an INCRBYFLOAT whose increment is not a float and answers the error in its slot, running
                // the rest of the transaction. The increment itself cannot go in the log, since replicas read some that
                // Redis refuses ("1\0") as numbers when they apply; an empty one every build since log format 3 applies
                // as exactly that error, leaving the key (and its WATCH revision) alone.
                CacheCommand.EncodeIncrementByFloat(buffer, alone, command.IncrByFloat.Key.Span, []);
            }
            else if (command.IsWrite)
            {
                Encode(command, alone, buffer);
            }
            else
            {
                CacheCommand.EncodeRead(buffer, alone, ReadKindOf(command)!.Value, ReadKeys(command), command.Getrange?.Start ?? 0, command.Getrange?.End ?? 0);
            }

            commands[i] = buffer.WrittenMemory;
        }

        if (!transaction.Watched)
        {
            CacheCommand.EncodeTransaction(output, envelope, commands);
            return;
        }

        var watches = new WatchedKey[transaction.Watches.Count];
        for (var i = 0; i < watches.Length; i++)
        {
            var watch = transaction.Watches[i];
            watches[i] = new WatchedKey(watch.Key.Memory, watch.WatchedAt, watch.Live);
        }

        CacheCommand.EncodeWatchedTransaction(output, envelope, watches, commands);
    }

    private static ReadOnlyMemory<byte>[] ReadKeys(Proto.Command command) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.Get => [command.Get.Key.Memory],
        Proto.Command.OpOneofCase.Mget => ToMemories(command.Mget.Keys),
        Proto.Command.OpOneofCase.Exists => ToMemories(command.Exists.Keys),
        Proto.Command.OpOneofCase.Ttl => [command.Ttl.Key.Memory],
        Proto.Command.OpOneofCase.Expiretime => [command.Expiretime.Key.Memory],
        Proto.Command.OpOneofCase.Strlen => [command.Strlen.Key.Memory],
        Proto.Command.OpOneofCase.Getrange => [command.Getrange.Key.Memory],
        Proto.Command.OpOneofCase.Type => [command.Type.Key.Memory],
        _ => [],
    };

    public static void Encode(Proto.Command command, long nowMs, IBufferWriter<byte> output) =>
        Encode(command, new CommandEnvelope(command.ClientId, command.Sequence, nowMs, command.SessionMustExist), output);

    private static void Encode(Proto.Command command, CommandEnvelope envelope, IBufferWriter<byte> output)
    {
        var nowMs = envelope.NowMs;
        switch (command.OpCase)
        {
            case Proto.Command.OpOneofCase.Set:
                var set = command.Set;
                var options = new SetOptions(
                    Condition: (SetCondition)(int)set.Condition,
                    ReturnOldValue: set.Get,
                    Expiry: set.ExpiryCase switch
                    {
                        Proto.SetRequest.ExpiryOneofCase.TtlMs or Proto.SetRequest.ExpiryOneofCase.ExpireAtMs => SetExpiry.At,
                        Proto.SetRequest.ExpiryOneofCase.KeepTtl when set.KeepTtl => SetExpiry.KeepTtl,
                        _ => SetExpiry.None,
                    },
                    ExpireAtMs: set.ExpiryCase switch
                    {
                        Proto.SetRequest.ExpiryOneofCase.TtlMs => Storable(SaturatingAdd(nowMs, set.TtlMs)),
                        Proto.SetRequest.ExpiryOneofCase.ExpireAtMs => Storable(set.ExpireAtMs),
                        _ => 0,
                    });
                CacheCommand.EncodeSet(output, envelope, set.Key.Span, set.Value.Span, options);
                break;
            case Proto.Command.OpOneofCase.Del:
                CacheCommand.EncodeDelete(output, envelope, ToMemories(command.Del.Keys));
                break;
            case Proto.Command.OpOneofCase.Mset:
                CacheCommand.EncodeMultiSet(output, envelope, Pairs(command.Mset.Keys, command.Mset.Values));
                break;
            case Proto.Command.OpOneofCase.IncrBy:
                CacheCommand.EncodeIncrementBy(output, envelope, command.IncrBy.Key.Span, command.IncrBy.Delta);
                break;
            case Proto.Command.OpOneofCase.Expire:
                var expire = command.Expire;
                var at = Storable(expire.WhenCase == Proto.ExpireRequest.WhenOneofCase.TtlMs ? SaturatingAdd(nowMs, expire.TtlMs) : expire.ExpireAtMs);
                CacheCommand.EncodeExpire(output, envelope, expire.Key.Span, at, (ExpireCondition)ExpireConditionOf(expire.Condition));
                break;
            case Proto.Command.OpOneofCase.RegisterSession:
                CacheCommand.EncodeRegisterSession(output, envelope with { SessionMustExist = false });
                break;
            case Proto.Command.OpOneofCase.Persist:
                CacheCommand.EncodePersist(output, envelope, command.Persist.Key.Span);
                break;
            case Proto.Command.OpOneofCase.Getdel:
                CacheCommand.EncodeGetDelete(output, envelope, command.Getdel.Key.Span);
                break;
            case Proto.Command.OpOneofCase.Getex:
                var getEx = command.Getex;
                CacheCommand.EncodeGetExpire(output, envelope, getEx.Key.Span, getEx.Persist ? GetExpiry.Persist : GetExpiry.At, getEx.ExpiryCase switch
                {
                    Proto.GetExRequest.ExpiryOneofCase.TtlMs => Storable(SaturatingAdd(nowMs, getEx.TtlMs)),
                    Proto.GetExRequest.ExpiryOneofCase.ExpireAtMs => Storable(getEx.ExpireAtMs),
                    _ => 0,
                });
                break;
            case Proto.Command.OpOneofCase.Append:
                CacheCommand.EncodeAppend(output, envelope, command.Append.Key.Span, command.Append.Value.Span);
                break;
            case Proto.Command.OpOneofCase.IncrByFloat:
                CacheCommand.EncodeIncrementByFloat(output, envelope, command.IncrByFloat.Key.Span, command.IncrByFloat.Increment.Span);
                break;
            case Proto.Command.OpOneofCase.Msetnx:
                CacheCommand.EncodeMultiSet(output, envelope, Pairs(command.Msetnx.Keys, command.Msetnx.Values), ifNoneExist: true);
                break;
            case Proto.Command.OpOneofCase.Flushall:
                CacheCommand.EncodeFlushAll(output, envelope);
                break;
            case Proto.Command.OpOneofCase.Rename:
                CacheCommand.EncodeRename(output, envelope, command.Rename.Source.Span, command.Rename.Destination.Span, command.Rename.IfAbsent);
                break;
            case Proto.Command.OpOneofCase.Setrange:
                CacheCommand.EncodeSetRange(output, envelope, command.Setrange.Key.Span, command.Setrange.Offset, command.Setrange.Value.Span);
                break;
            case Proto.Command.OpOneofCase.Copy:
                CacheCommand.EncodeCopy(output, envelope, command.Copy.Source.Span, command.Copy.Destination.Span, command.Copy.Replace);
                break;
            case Proto.Command.OpOneofCase.Transaction:
                EncodeTransaction(command.Transaction, envelope, output);
                break;
            default:
                throw new ArgumentException($"{command.OpCase} is not a write", nameof(command));
        }
    }

    private static byte ExpireConditionOf(Proto.ExpireCondition condition) => condition switch
    {
        Proto.ExpireCondition.ExpireIfNoTtl => (byte)ExpireCondition.IfNoTtl,
        Proto.ExpireCondition.ExpireIfHasTtl => (byte)ExpireCondition.IfHasTtl,
        Proto.ExpireCondition.ExpireIfGreater => (byte)ExpireCondition.IfGreater,
        Proto.ExpireCondition.ExpireIfLess => (byte)ExpireCondition.IfLess,
        Proto.ExpireCondition.ExpireIfHasTtlAndLess => (byte)(ExpireCondition.IfHasTtl | ExpireCondition.IfLess),
        _ => (byte)ExpireCondition.Always,
    };

    /// <summary>
    /// An expiry time the state machine can hold: long.MaxValue is its "no expiry" (in entries and snapshots alike), so
    /// the one time equal to it, which Redis accepts as a time (PEXPIREAT key 9223372036854775807), is stored a
    /// millisecond earlier rather than silently leaving the key without expiry (PERSIST and TTL then answer as Redis).
    /// </summary>
    private static long Storable(long expireAtMs) => expireAtMs == CacheEntry.NoExpiry ? CacheEntry.NoExpiry - 1 : expireAtMs;

    private static long SaturatingAdd(long a, long b) => b > 0 && a > long.MaxValue - b ? long.MaxValue : b < 0 && a < long.MinValue - b ? long.MinValue : a + b;

    /// <summary>MSET's and MSETNX's lists interleaved as key, value, key, value, ...</summary>
    private static ReadOnlyMemory<byte>[] Pairs(Google.Protobuf.Collections.RepeatedField<ByteString> keys, Google.Protobuf.Collections.RepeatedField<ByteString> values)
    {
        var pairs = new ReadOnlyMemory<byte>[keys.Count * 2];
        for (var i = 0; i < keys.Count; i++)
        {
            pairs[2 * i] = keys[i].Memory;
            pairs[(2 * i) + 1] = values[i].Memory;
        }

        return pairs;
    }

    private static ReadOnlyMemory<byte>[] ToMemories(Google.Protobuf.Collections.RepeatedField<ByteString> keys)
    {
        var result = new ReadOnlyMemory<byte>[keys.Count];
        for (var i = 0; i < keys.Count; i++)
        {
            result[i] = keys[i].Memory;
        }

        return result;
    }
}
