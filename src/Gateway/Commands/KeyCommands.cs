using System.Text;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>The cache commands: each becomes one cluster command (see protos/cache.proto), validated here as Redis validates it.</summary>
internal static class KeyCommands
{
    public static PendingReply Get(CommandContext context, RespRequest request) =>
        context.Read(new Command { Get = new GetRequest { Key = request.ByteString(1) } });

    /// <summary>SET key value [NX|XX] [GET] [EX s|PX ms|EXAT unix-s|PXAT unix-ms|KEEPTTL], parsed as Redis 7.0's parseExtendedStringArgumentsOrReply.</summary>
    public static PendingReply Set(CommandContext context, RespRequest request)
    {
        var set = new SetRequest { Key = request.ByteString(1), Value = request.ByteString(2) };
        bool nx = false, xx = false, keepTtl = false, ex = false, px = false, exat = false, pxat = false;
        var expireArgument = -1;
        for (var j = 3; j < request.Count; j++)
        {
            var option = request[j];
            var hasNext = j < request.Count - 1;
            if (Is(option, "nx"u8) && !xx)
            {
                nx = true;
            }
            else if (Is(option, "xx"u8) && !nx)
            {
                xx = true;
            }
            else if (Is(option, "get"u8))
            {
                set.Get = true;
            }
            else if (Is(option, "keepttl"u8) && !ex && !exat && !px && !pxat)
            {
                keepTtl = true;
            }
            else if (Is(option, "ex"u8) && !keepTtl && !exat && !px && !pxat && hasNext)
            {
                ex = true;
                expireArgument = ++j;
            }
            else if (Is(option, "px"u8) && !keepTtl && !ex && !exat && !pxat && hasNext)
            {
                px = true;
                expireArgument = ++j;
            }
            else if (Is(option, "exat"u8) && !keepTtl && !ex && !px && !pxat && hasNext)
            {
                exat = true;
                expireArgument = ++j;
            }
            else if (Is(option, "pxat"u8) && !keepTtl && !ex && !exat && !px && hasNext)
            {
                pxat = true;
                expireArgument = ++j;
            }
            else
            {
                return PendingReply.Error(RedisErrors.Syntax);
            }
        }

        set.Condition = nx ? SetCondition.IfAbsent : xx ? SetCondition.IfPresent : SetCondition.Always;
        if (keepTtl)
        {
            set.KeepTtl = true;
        }
        else if (expireArgument > 0)
        {
            // getExpireMillisecondsOrReply: positive, no overflow once in ms and once added to now.
            if (!RespInteger.TryParse(request[expireArgument], out var value))
            {
                return PendingReply.Error(RedisErrors.NotAnInteger);
            }

            var seconds = ex || exat;
            if (value <= 0 || (seconds && value > long.MaxValue / 1000))
            {
                return PendingReply.Error(RedisErrors.InvalidExpireTime("set"));
            }

            var milliseconds = seconds ? value * 1000 : value;
            if (ex || px)
            {
                if (milliseconds > long.MaxValue - context.NowMs)
                {
                    return PendingReply.Error(RedisErrors.InvalidExpireTime("set"));
                }

                set.TtlMs = milliseconds;
            }
            else
            {
                set.ExpireAtMs = milliseconds;
            }
        }

        return context.Write(new Command { Set = set });
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
        if (request.Count % 2 == 0)
        {
            return PendingReply.Error(RedisErrors.WrongArity("mset"));
        }

        var set = new MSetRequest();
        for (var i = 1; i < request.Count; i += 2)
        {
            set.Keys.Add(request.ByteString(i));
            set.Values.Add(request.ByteString(i + 1));
        }

        return context.Write(new Command { Mset = set });
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
                return PendingReply.Error(RedisErrors.UnsupportedOption(request.Text(j)));
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

    /// <summary>Case-insensitive comparison of an option with its lower-case ASCII spelling.</summary>
    internal static bool Is(ReadOnlySpan<byte> argument, ReadOnlySpan<byte> lowerCaseOption) =>
        Ascii.EqualsIgnoreCase(argument, lowerCaseOption);
}
