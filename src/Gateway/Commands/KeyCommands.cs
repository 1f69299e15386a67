using System.Globalization;
using System.Text;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Google.Protobuf.Collections;

namespace Dcache.Gateway.Commands;

/// <summary>The cache commands: each becomes one cluster command (see protos/cache.proto), validated here as Redis validates it.</summary>
internal static class KeyCommands
{
    private const ulong DefaultScanCount = 10;

    private static readonly ByteString EveryKey = ByteString.CopyFromUtf8("*");

    /// <summary>A SCAN reply whose cursor 0 ends the iteration, with no keys.</summary>
    private static readonly Reply FinishedScan = Replies.Array(Replies.Bulk("0"), Replies.EmptyArray);

    public static PendingReply Get(CommandContext context, RespRequest request) =>
        context.Read(new Command { Get = new GetRequest { Key = request.ByteString(1) } });

    /// <summary>SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL].</summary>
    public static PendingReply Set(CommandContext context, RespRequest request)
    {
        if (!TryParseExtendedArguments(request, getEx: false, out var parsed))
        {
            return PendingReply.Error(RedisErrors.Syntax);
        }

        var set = new SetRequest
        {
            Key = request.ByteString(1),
            Value = request.ByteString(2),
            Get = parsed.Get,
            Condition = parsed.Nx ? SetCondition.IfAbsent : parsed.Xx ? SetCondition.IfPresent : SetCondition.Always,
        };
        if (parsed.KeepTtl)
        {
            set.KeepTtl = true;
        }
        else if (parsed.Expiry != ExpiryOption.None)
        {
            if (ExpiryMilliseconds(context, request, parsed, "set", out var milliseconds) is { } error)
            {
                return PendingReply.Error(error);
            }

            if (parsed.IsRelative)
            {
                set.TtlMs = milliseconds;
            }
            else
            {
                set.ExpireAtMs = milliseconds;
            }
        }

        return context.Write(new Command { Set = set });
    }

    /// <summary>GETEX key [EX s|PX ms|EXAT unix-s|PXAT unix-ms|PERSIST]; without an option it is a GET (it changes nothing).</summary>
    public static PendingReply GetEx(CommandContext context, RespRequest request)
    {
        if (!TryParseExtendedArguments(request, getEx: true, out var parsed))
        {
            return PendingReply.Error(RedisErrors.Syntax);
        }

        var getEx = new GetExRequest { Key = request.ByteString(1) };
        if (parsed.Persist)
        {
            getEx.Persist = true;
        }
        else if (parsed.Expiry == ExpiryOption.None)
        {
            return Get(context, request);
        }
        else if (ExpiryMilliseconds(context, request, parsed, "getex", out var milliseconds) is { } error)
        {
            // Redis's getexCommand looks the key up before it checks the time: a missing key answers nil, an existing
            // one the error. Nothing changes either way, so a read of the key decides.
            var lookup = Get(context, request);
            return lookup with { Pending = ErrorUnlessMissingAsync(lookup.Pending!, error) };
        }
        else if (parsed.IsRelative)
        {
            getEx.TtlMs = milliseconds;
        }
        else
        {
            getEx.ExpireAtMs = milliseconds;
        }

        return context.Write(new Command { Getex = getEx });
    }

    /// <summary>The lookup's nil (or cluster error) as it is; a value found becomes <paramref name="error"/>.</summary>
    private static async Task<Reply> ErrorUnlessMissingAsync(Task<Reply> lookup, string error)
    {
        var reply = await lookup.ConfigureAwait(false);
        return reply.ResultCase == Reply.ResultOneofCase.Bulk ? Replies.Error(error) : reply;
    }

    /// <summary>
    /// The options of SET (from argument 3) or GETEX (from argument 2), accepted in the combinations Redis 7.0's
    /// parseExtendedStringArgumentsOrReply accepts: a repeated expiry option wins with its last value. False means a
    /// syntax error.
    /// </summary>
    private static bool TryParseExtendedArguments(RespRequest request, bool getEx, out ExtendedArguments parsed)
    {
        parsed = default;
        for (var j = getEx ? 2 : 3; j < request.Count; j++)
        {
            var option = request[j];
            var expiry = ExpiryOptionOf(option);
            if (!getEx && Is(option, "nx"u8) && !parsed.Xx)
            {
                parsed.Nx = true;
            }
            else if (!getEx && Is(option, "xx"u8) && !parsed.Nx)
            {
                parsed.Xx = true;
            }
            else if (!getEx && Is(option, "get"u8))
            {
                parsed.Get = true;
            }
            else if (!getEx && Is(option, "keepttl"u8) && parsed.Expiry == ExpiryOption.None)
            {
                parsed.KeepTtl = true;
            }
            else if (getEx && Is(option, "persist"u8) && parsed.Expiry == ExpiryOption.None)
            {
                parsed.Persist = true;
            }
            else if (expiry != ExpiryOption.None && !parsed.KeepTtl && !parsed.Persist
                && (parsed.Expiry == ExpiryOption.None || parsed.Expiry == expiry) && j < request.Count - 1)
            {
                parsed.Expiry = expiry;
                parsed.ExpireArgument = ++j;
            }
            else
            {
                return false;
            }
        }

        return true;
    }

    private static ExpiryOption ExpiryOptionOf(ReadOnlySpan<byte> option) =>
        Is(option, "ex"u8) ? ExpiryOption.Ex
        : Is(option, "px"u8) ? ExpiryOption.Px
        : Is(option, "exat"u8) ? ExpiryOption.ExAt
        : Is(option, "pxat"u8) ? ExpiryOption.PxAt
        : ExpiryOption.None;

    /// <summary>Redis 7.0's getExpireMillisecondsOrReply: positive, no overflow once in ms nor once added to now. Null when valid.</summary>
    private static string? ExpiryMilliseconds(CommandContext context, RespRequest request, ExtendedArguments parsed, string name, out long milliseconds)
    {
        milliseconds = 0;
        if (!RespInteger.TryParse(request[parsed.ExpireArgument], out var value))
        {
            return RedisErrors.NotAnInteger;
        }

        var seconds = parsed.Expiry is ExpiryOption.Ex or ExpiryOption.ExAt;
        if (value <= 0 || (seconds && value > long.MaxValue / 1000))
        {
            return RedisErrors.InvalidExpireTime(name);
        }

        milliseconds = seconds ? value * 1000 : value;
        return parsed.IsRelative && milliseconds > long.MaxValue - context.NowMs ? RedisErrors.InvalidExpireTime(name) : null;
    }

    /// <summary>SETEX key seconds value (StackExchange.Redis sends it for a SET with an expiry).</summary>
    public static PendingReply SetWithSeconds(CommandContext context, RespRequest request) => SetWithTimeToLive(context, request, "setex", seconds: true);

    /// <summary>PSETEX key milliseconds value.</summary>
    public static PendingReply SetWithMilliseconds(CommandContext context, RespRequest request) => SetWithTimeToLive(context, request, "psetex", seconds: false);

    private static PendingReply SetWithTimeToLive(CommandContext context, RespRequest request, string name, bool seconds)
    {
        if (!RespInteger.TryParse(request[2], out var value))
        {
            return PendingReply.Error(RedisErrors.NotAnInteger);
        }

        if (value <= 0 || (seconds && value > long.MaxValue / 1000))
        {
            return PendingReply.Error(RedisErrors.InvalidExpireTime(name));
        }

        var milliseconds = seconds ? value * 1000 : value;
        if (milliseconds > long.MaxValue - context.NowMs)
        {
            return PendingReply.Error(RedisErrors.InvalidExpireTime(name));
        }

        return context.Write(new Command { Set = new SetRequest { Key = request.ByteString(1), Value = request.ByteString(3), TtlMs = milliseconds } });
    }

    /// <summary>SETNX key value: SET key value NX, answering 1 when it set the key and 0 when not.</summary>
    public static PendingReply SetIfAbsent(CommandContext context, RespRequest request) =>
        context.Write(new Command { Set = new SetRequest { Key = request.ByteString(1), Value = request.ByteString(2), Condition = SetCondition.IfAbsent } }) with
        {
            Shape = ReplyShape.OkAsOne,
        };

    /// <summary>GETSET key value: SET key value GET.</summary>
    public static PendingReply GetAndSet(CommandContext context, RespRequest request) =>
        context.Write(new Command { Set = new SetRequest { Key = request.ByteString(1), Value = request.ByteString(2), Get = true } });

    /// <summary>PUT key value: SET key value.</summary>
    public static PendingReply Put(CommandContext context, RespRequest request) =>
        context.Write(new Command { Set = new SetRequest { Key = request.ByteString(1), Value = request.ByteString(2) } });

    public static PendingReply Delete(CommandContext context, RespRequest request)
    {
        var delete = new DelRequest();
        for (var i = 1; i < request.Count; i++)
        {
            delete.Keys.Add(request.ByteString(i));
        }

        return context.Write(new Command { Del = delete });
    }

    public static PendingReply Exists(CommandContext context, RespRequest request)
    {
        var exists = new ExistsRequest();
        for (var i = 1; i < request.Count; i++)
        {
            exists.Keys.Add(request.ByteString(i));
        }

        return context.Read(new Command { Exists = exists });
    }

    public static PendingReply MultiGet(CommandContext context, RespRequest request)
    {
        var get = new MGetRequest();
        for (var i = 1; i < request.Count; i++)
        {
            get.Keys.Add(request.ByteString(i));
        }

        return context.Read(new Command { Mget = get });
    }

    public static PendingReply MultiSet(CommandContext context, RespRequest request)
    {
        var set = new MSetRequest();
        return FillPairs(request, set.Keys, set.Values) ? context.Write(new Command { Mset = set }) : PendingReply.Error(RedisErrors.WrongArity("mset"));
    }

    /// <summary>MSETNX key value [key value ...]: 1 when it set every pair, 0 (and nothing set) when any key exists.</summary>
    public static PendingReply MultiSetIfNoneExist(CommandContext context, RespRequest request)
    {
        var set = new MSetNxRequest();
        return FillPairs(request, set.Keys, set.Values) ? context.Write(new Command { Msetnx = set }) : PendingReply.Error(RedisErrors.WrongArity("msetnx"));
    }

    /// <summary>Splits key value key value ... into the two lists; false for an odd count (Redis's arity error).</summary>
    private static bool FillPairs(RespRequest request, RepeatedField<ByteString> keys, RepeatedField<ByteString> values)
    {
        if (request.Count % 2 == 0)
        {
            return false;
        }

        for (var i = 1; i < request.Count; i += 2)
        {
            keys.Add(request.ByteString(i));
            values.Add(request.ByteString(i + 1));
        }

        return true;
    }

    public static PendingReply Increment(CommandContext context, RespRequest request) => IncrementBy(context, request, 1);

    public static PendingReply Decrement(CommandContext context, RespRequest request) => IncrementBy(context, request, -1);

    public static PendingReply IncrementBy(CommandContext context, RespRequest request) =>
        RespInteger.TryParse(request[2], out var delta)
            ? IncrementBy(context, request, delta)
            : PendingReply.Error(RedisErrors.NotAnInteger);

    public static PendingReply DecrementBy(CommandContext context, RespRequest request)
    {
        if (!RespInteger.TryParse(request[2], out var decrement))
        {
            return PendingReply.Error(RedisErrors.NotAnInteger);
        }

        return decrement == long.MinValue
            ? PendingReply.Error(RedisErrors.DecrementOverflow)
            : IncrementBy(context, request, -decrement);
    }

    private static PendingReply IncrementBy(CommandContext context, RespRequest request, long delta) =>
        context.Write(new Command { IncrBy = new IncrByRequest { Key = request.ByteString(1), Delta = delta } });

    public static PendingReply Expire(CommandContext context, RespRequest request) => ExpireGeneric(context, request, "expire", seconds: true, absolute: false);

    public static PendingReply PExpire(CommandContext context, RespRequest request) => ExpireGeneric(context, request, "pexpire", seconds: false, absolute: false);

    public static PendingReply ExpireAt(CommandContext context, RespRequest request) => ExpireGeneric(context, request, "expireat", seconds: true, absolute: true);

    public static PendingReply PExpireAt(CommandContext context, RespRequest request) => ExpireGeneric(context, request, "pexpireat", seconds: false, absolute: true);

    /// <summary>Redis 7.0's expireGenericCommand: options first, then the time, overflow checks in its order.</summary>
    private static PendingReply ExpireGeneric(CommandContext context, RespRequest request, string name, bool seconds, bool absolute)
    {
        bool nx = false, xx = false, gt = false, lt = false;
        for (var j = 3; j < request.Count; j++)
        {
            var option = request[j];
            if (Is(option, "nx"u8))
            {
                nx = true;
            }
            else if (Is(option, "xx"u8))
            {
                xx = true;
            }
            else if (Is(option, "gt"u8))
            {
                gt = true;
            }
            else if (Is(option, "lt"u8))
            {
                lt = true;
            }
            else
            {
                return PendingReply.Error(RedisErrors.UnsupportedOption(request.TextUpToNul(j)));
            }
        }

        if (nx && (xx || gt || lt))
        {
            return PendingReply.Error(RedisErrors.ExpireNxWithOthers);
        }

        if (gt && lt)
        {
            return PendingReply.Error(RedisErrors.ExpireGtAndLt);
        }

        if (!RespInteger.TryParse(request[2], out var when))
        {
            return PendingReply.Error(RedisErrors.NotAnInteger);
        }

        if (seconds)
        {
            if (when > long.MaxValue / 1000 || when < long.MinValue / 1000)
            {
                return PendingReply.Error(RedisErrors.InvalidExpireTime(name));
            }

            when *= 1000;
        }

        var expire = new ExpireRequest
        {
            Key = request.ByteString(1),
            Condition = nx ? ExpireCondition.ExpireIfNoTtl
                // GT never applies to a key without a TTL (Redis counts it as infinite), so XX GT is GT.
                : gt ? ExpireCondition.ExpireIfGreater
                : lt ? (xx ? ExpireCondition.ExpireIfHasTtlAndLess : ExpireCondition.ExpireIfLess)
                : xx ? ExpireCondition.ExpireIfHasTtl
                : ExpireCondition.ExpireAlways,
        };

        if (absolute)
        {
            expire.ExpireAtMs = when;
        }
        else
        {
            if (when > long.MaxValue - context.NowMs)
            {
                return PendingReply.Error(RedisErrors.InvalidExpireTime(name));
            }

            expire.TtlMs = when;
        }

        return context.Write(new Command { Expire = expire });
    }

    public static PendingReply Persist(CommandContext context, RespRequest request) =>
        context.Write(new Command { Persist = new PersistRequest { Key = request.ByteString(1) } });

    public static PendingReply Ttl(CommandContext context, RespRequest request) =>
        context.Read(new Command { Ttl = new TtlRequest { Key = request.ByteString(1), Milliseconds = false } });

    public static PendingReply PTtl(CommandContext context, RespRequest request) =>
        context.Read(new Command { Ttl = new TtlRequest { Key = request.ByteString(1), Milliseconds = true } });

    public static PendingReply DatabaseSize(CommandContext context, RespRequest request) =>
        context.Read(new Command { Dbsize = new DbSizeRequest() });

    public static PendingReply StringLength(CommandContext context, RespRequest request) =>
        context.Read(new Command { Strlen = new StrLenRequest { Key = request.ByteString(1) } });

    /// <summary>GETRANGE key start end (and SUBSTR, its old name): offsets are checked here, before the key is looked up, as Redis does.</summary>
    public static PendingReply GetRange(CommandContext context, RespRequest request) =>
        RespInteger.TryParse(request[2], out var start) && RespInteger.TryParse(request[3], out var end)
            ? context.Read(new Command { Getrange = new GetRangeRequest { Key = request.ByteString(1), Start = start, End = end } })
            : PendingReply.Error(RedisErrors.NotAnInteger);

    /// <summary>TYPE key: "+string" or "+none" (the only type there is).</summary>
    public static PendingReply Type(CommandContext context, RespRequest request) =>
        context.Read(new Command { Type = new TypeRequest { Key = request.ByteString(1) } }, ReplyShape.Status);

    public static PendingReply ExpireTime(CommandContext context, RespRequest request) =>
        context.Read(new Command { Expiretime = new ExpireTimeRequest { Key = request.ByteString(1), Milliseconds = false } });

    public static PendingReply PExpireTime(CommandContext context, RespRequest request) =>
        context.Read(new Command { Expiretime = new ExpireTimeRequest { Key = request.ByteString(1), Milliseconds = true } });

    /// <summary>KEYS pattern: O(keys) on the node that serves it, as in Redis.</summary>
    public static PendingReply Keys(CommandContext context, RespRequest request) =>
        context.Read(new Command { Keys = new KeysRequest { Pattern = request.ByteString(1) } });

    /// <summary>
    /// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type], checked as Redis 7.0 checks it: the cursor first, then the
    /// options in order, a repeated option's last value winning. Every key is a string, so TYPE string filters nothing
    /// and any other type name (Redis 7.0 does not check the names either) matches no key: that answers at once with
    /// the iteration over.
    /// </summary>
    public static PendingReply Scan(CommandContext context, RespRequest request)
    {
        if (!TryParseCursor(request[1], out var cursor))
        {
            return PendingReply.Error(RedisErrors.InvalidCursor);
        }

        var scan = new ScanRequest { Cursor = cursor, Pattern = EveryKey, Count = DefaultScanCount };
        var typeIsString = true;
        for (var i = 2; i < request.Count; i += 2)
        {
            var option = request[i];
            var hasValue = i + 1 < request.Count;
            if (hasValue && Is(option, "count"u8))
            {
                if (!RespInteger.TryParse(request[i + 1], out var count))
                {
                    return PendingReply.Error(RedisErrors.NotAnInteger);
                }

                if (count < 1)
                {
                    return PendingReply.Error(RedisErrors.Syntax);
                }

                scan.Count = (ulong)count;
            }
            else if (hasValue && Is(option, "match"u8))
            {
                scan.Pattern = request.ByteString(i + 1);
            }
            else if (hasValue && Is(option, "type"u8))
            {
                typeIsString = Is(request[i + 1], "string"u8);
            }
            else
            {
                return PendingReply.Error(RedisErrors.Syntax);
            }
        }

        if (!typeIsString)
        {
            return PendingReply.Of(FinishedScan);
        }

        return ExplainUnknownToNode(context.Read(new Command { Scan = scan }), "SCAN");
    }

    /// <summary>
    /// A cursor as Redis 7.0's parseScanCursorOrReply reads it with C's strtoul: the text up to any NUL byte, no leading
    /// space, an optional sign (a negative number wraps around 2^64, as strtoul's does), decimal digits, nothing after
    /// them; empty text is 0. Out of range is invalid.
    /// </summary>
    private static bool TryParseCursor(ReadOnlySpan<byte> text, out ulong cursor)
    {
        cursor = 0;
        var nul = text.IndexOf((byte)0);
        if (nul >= 0)
        {
            text = text[..nul];
        }

        if (text.IsEmpty)
        {
            return true;
        }

        var negative = text[0] == (byte)'-';
        var digits = text[0] is (byte)'-' or (byte)'+' ? text[1..] : text;
        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var magnitude))
        {
            return false;
        }

        cursor = negative ? unchecked(0 - magnitude) : magnitude;
        return true;
    }

    /// <summary>
    /// A node whose build predates the command (SCAN, SETRANGE, COPY, RANDOMKEY) does not know the request and refuses it as
    /// invalid, applying nothing; the client is told why (a gateway newer than some nodes: a rolling upgrade) rather than
    /// that its request was malformed.
    /// </summary>
    private static PendingReply ExplainUnknownToNode(PendingReply sent, string name) =>
        sent with { Pending = ExplainUnknownToNodeAsync(sent.Pending!, name) };

    private static async Task<Reply> ExplainUnknownToNodeAsync(Task<Reply> sent, string name)
    {
        var reply = await sent.ConfigureAwait(false);
        return reply.Failure is { Kind: FailureKind.InvalidRequest } refused
            ? Replies.Error($"ERR {name} needs every node on a build that has it (a rolling upgrade is in progress): {refused.Message}")
            : reply;
    }

    /// <summary>
    /// SETRANGE key offset value, checked as Redis 7.0's setrangeCommand checks it: the offset (an integer, not negative),
    /// then, for a value that is not empty, the length it would give the key (any key's value may grow to 512 MiB, as
    /// Redis's proto-max-bulk-len allows; the check does not depend on the key, so it is answered here). An empty value
    /// changes nothing and answers the key's length: the cluster reads it.
    /// </summary>
    public static PendingReply SetRange(CommandContext context, RespRequest request)
    {
        if (!RespInteger.TryParse(request[2], out var offset))
        {
            return PendingReply.Error(RedisErrors.NotAnInteger);
        }

        if (offset < 0)
        {
            return PendingReply.Error(RedisErrors.OffsetOutOfRange);
        }

        var value = request[3];
        if (value.IsEmpty)
        {
            return ExplainUnknownToNode(context.Read(new Command { Strlen = new StrLenRequest { Key = request.ByteString(1) } }), "SETRANGE");
        }

        if ((ulong)offset + (ulong)value.Length > RedisErrors.MaxStringLength)
        {
            return PendingReply.Error(RedisErrors.StringTooLong);
        }

        return ExplainUnknownToNode(
            context.Write(new Command { Setrange = new SetRangeRequest { Key = request.ByteString(1), Offset = offset, Value = request.ByteString(3) } }),
            "SETRANGE");
    }

    /// <summary>
    /// COPY source destination [DB destination-db] [REPLACE], checked as Redis 7.0's copyCommand checks it: the options in
    /// order (DB must be a 32-bit integer naming a database, and there is only database 0, as SELECT says), then a key
    /// copied onto itself; those errors do not depend on the keys, so they are answered here.
    /// </summary>
    public static PendingReply Copy(CommandContext context, RespRequest request)
    {
        var replace = false;
        for (var j = 3; j < request.Count; j++)
        {
            if (Is(request[j], "replace"u8))
            {
                replace = true;
            }
            else if (Is(request[j], "db"u8) && j + 1 < request.Count)
            {
                if (ConnectionCommands.CheckDatabaseIndex(request[++j]) is { } error)
                {
                    return PendingReply.Error(error);
                }
            }
            else
            {
                return PendingReply.Error(RedisErrors.Syntax);
            }
        }

        if (request[1].SequenceEqual(request[2]))
        {
            return PendingReply.Error(RedisErrors.SameObject);
        }

        return ExplainUnknownToNode(
            context.Write(new Command { Copy = new CopyRequest { Source = request.ByteString(1), Destination = request.ByteString(2), Replace = replace } }),
            "COPY");
    }

    /// <summary>RANDOMKEY: any live key of the serving node (a read: linearizable, or local after READONLY), or nil.</summary>
    public static PendingReply RandomKey(CommandContext context, RespRequest request) =>
        ExplainUnknownToNode(context.Read(new Command { Randomkey = new RandomKeyRequest() }), "RANDOMKEY");

    public static PendingReply GetDelete(CommandContext context, RespRequest request) =>
        context.Write(new Command { Getdel = new GetDelRequest { Key = request.ByteString(1) } });

    public static PendingReply Append(CommandContext context, RespRequest request) =>
        context.Write(new Command { Append = new AppendRequest { Key = request.ByteString(1), Value = request.ByteString(2) } });

    /// <summary>INCRBYFLOAT key increment: the leader parses the increment, so that one parser decides what a float is.</summary>
    public static PendingReply IncrementByFloat(CommandContext context, RespRequest request) =>
        context.Write(new Command { IncrByFloat = new IncrByFloatRequest { Key = request.ByteString(1), Increment = request.ByteString(2) } });

    /// <summary>FLUSHALL / FLUSHDB [ASYNC|SYNC]: the two are one here (a single database); both modes empty it at once.</summary>
    public static PendingReply FlushAll(CommandContext context, RespRequest request) =>
        request.Count == 1 || (request.Count == 2 && (Is(request[1], "sync"u8) || Is(request[1], "async"u8)))
            ? context.Write(new Command { Flushall = new FlushAllRequest() })
            : PendingReply.Error(RedisErrors.Syntax);

    public static PendingReply Rename(CommandContext context, RespRequest request) => Rename(context, request, ifAbsent: false);

    public static PendingReply RenameIfAbsent(CommandContext context, RespRequest request) => Rename(context, request, ifAbsent: true);

    private static PendingReply Rename(CommandContext context, RespRequest request, bool ifAbsent) =>
        context.Write(new Command { Rename = new RenameRequest { Source = request.ByteString(1), Destination = request.ByteString(2), IfAbsent = ifAbsent } });

    /// <summary>
    /// An option compared with its lower-case ASCII spelling as Redis compares options (strcasecmp, or a check of each
    /// character and the terminating NUL): case-insensitively, and only up to the argument's first NUL byte.
    /// </summary>
    internal static bool Is(ReadOnlySpan<byte> argument, ReadOnlySpan<byte> lowerCaseOption) =>
        Ascii.EqualsIgnoreCase(RespRequest.UpToNul(argument), lowerCaseOption);
}

/// <summary>Which expiry option SET or GETEX named.</summary>
internal enum ExpiryOption : byte
{
    None,
    Ex,
    Px,
    ExAt,
    PxAt,
}

/// <summary>The options SET and GETEX share, as parsed (<see cref="ExpireArgument"/> is the index of the expiry's value).</summary>
internal record struct ExtendedArguments(bool Nx, bool Xx, bool Get, bool KeepTtl, bool Persist, ExpiryOption Expiry, int ExpireArgument)
{
    /// <summary>EX and PX are relative: the leader adds its clock; EXAT and PXAT are absolute already.</summary>
    public readonly bool IsRelative => Expiry is ExpiryOption.Ex or ExpiryOption.Px;
}
