using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>Commands answered from the connection's own state: handshake, auth, names, READONLY, SELECT, QUIT, pub/sub.</summary>
internal static class ConnectionCommands
{
    public static PendingReply Ping(CommandContext context, RespRequest request)
    {
        if (request.Count > 2)
        {
            return PendingReply.Error(RedisErrors.WrongArity("ping"));
        }

        if (context.Client.InSubscriberContext)
        {
            // In RESP2 subscriber mode Redis answers PING with a pub/sub-shaped array.
            return PendingReply.Of(Replies.Array(Replies.Bulk("pong"), request.Count == 2 ? Replies.Bulk(request[1]) : Replies.Bulk("")));
        }

        return request.Count == 2 ? PendingReply.Of(Replies.Bulk(request[1])) : PendingReply.Of(Replies.Pong, ReplyShape.Status);
    }

    public static PendingReply Echo(CommandContext context, RespRequest request) => PendingReply.Of(Replies.Bulk(request[1]));

    public static PendingReply Quit(CommandContext context, RespRequest request) => new(Replies.Ok, null, CloseAfterReply: true);

    public static PendingReply Select(CommandContext context, RespRequest request) =>
        CheckDatabaseIndex(request[1]) is { } error ? PendingReply.Error(error) : PendingReply.Of(Replies.Ok);

    /// <summary>
    /// A database index as Redis 7.0 takes one (SELECT, COPY's DB): a 32-bit integer (getIntFromObjectOrReply), then a
    /// database that exists, and there is only database 0. Null for 0, else Redis's error.
    /// </summary>
    public static string? CheckDatabaseIndex(ReadOnlySpan<byte> argument)
    {
        if (!RespInteger.TryParse(argument, out var index))
        {
            return RedisErrors.NotAnInteger;
        }

        if (index is < int.MinValue or > int.MaxValue)
        {
            return RedisErrors.NotAn32BitInteger;
        }

        return index == 0 ? null : RedisErrors.DbIndexOutOfRange;
    }

    /// <summary>TIME: the gateway's clock as Redis answers it, unix seconds and the microseconds within that second, two bulks.</summary>
    public static PendingReply Time(CommandContext context, RespRequest request)
    {
        var now = context.Time.GetUtcNow();
        var sinceEpoch = now - DateTimeOffset.UnixEpoch;
        var seconds = Math.DivRem(sinceEpoch.Ticks, TimeSpan.TicksPerSecond, out var ticks);
        return PendingReply.Of(Replies.Array(
            Replies.Bulk(seconds.ToString(CultureInfo.InvariantCulture)),
            Replies.Bulk((ticks / TimeSpan.TicksPerMicrosecond).ToString(CultureInfo.InvariantCulture))));
    }

    public static PendingReply ReadOnly(CommandContext context, RespRequest request)
    {
        context.Client.ReadOnly = true;
        return PendingReply.Of(Replies.Ok);
    }

    public static PendingReply ReadWrite(CommandContext context, RespRequest request)
    {
        context.Client.ReadOnly = false;
        return PendingReply.Of(Replies.Ok);
    }

    /// <summary>
    /// RESET: the connection as a new one finds it, as Redis 7.0's RESET leaves it: no transaction, no watched keys, no
    /// subscriptions, READWRITE, RESP2, database 0, no name, and not authenticated when a password is required. The
    /// client library's name and version stay, as they describe the same client.
    /// </summary>
    public static PendingReply Reset(CommandContext context, RespRequest request)
    {
        var client = context.Client;
        client.Transaction = null;
        client.Unwatch();
        client.UnsubscribeAll();
        client.ReadOnly = false;
        client.Protocol = RespProtocol.Resp2;
        client.Name = null;
        client.Authenticated = !context.Options.AuthenticationRequired;
        return PendingReply.Of(ResetReply, ReplyShape.Status);
    }

    private static readonly Reply ResetReply = Replies.Bulk("RESET");

    /// <summary>AUTH [username] password, as Redis 7.0's authCommand with only the "default" user.</summary>
    public static PendingReply Auth(CommandContext context, RespRequest request)
    {
        if (request.Count > 3)
        {
            return PendingReply.Error(RedisErrors.Syntax);
        }

        if (request.Count == 2 && !context.Options.AuthenticationRequired)
        {
            return PendingReply.Error(RedisErrors.AuthWithoutPassword);
        }

        var user = request.Count == 3 ? request[1] : "default"u8;
        var password = request[request.Count - 1];
        if (!Authenticate(context, user, password))
        {
            return PendingReply.Error(RedisErrors.WrongPass);
        }

        context.Client.Authenticated = true;
        return PendingReply.Of(Replies.Ok);
    }

    /// <summary>
    /// HELLO [protover [AUTH username password] [SETNAME clientname]], as Redis 7.0's helloCommand: each option takes
    /// effect as it is read, in order (a bad password or name ends the command there, with what went before it done),
    /// then a connection still unauthenticated is refused; only a HELLO that gets this far changes the protocol.
    /// </summary>
    public static PendingReply Hello(CommandContext context, RespRequest request)
    {
        long version = 0;
        var next = 1;
        if (request.Count >= 2)
        {
            if (!RespInteger.TryParse(request[next++], out version))
            {
                return PendingReply.Error(RedisErrors.ProtocolVersionNotInteger);
            }

            if (version is < 2 or > 3)
            {
                return PendingReply.Error(RedisErrors.NoProto);
            }
        }

        var client = context.Client;
        for (var j = next; j < request.Count; j++)
        {
            var remaining = request.Count - 1 - j;
            if (KeyCommands.Is(request[j], "auth"u8) && remaining >= 2)
            {
                if (!Authenticate(context, request[j + 1], request[j + 2]))
                {
                    return PendingReply.Error(RedisErrors.WrongPass);
                }

                client.Authenticated = true;
                j += 2;
            }
            else if (KeyCommands.Is(request[j], "setname"u8) && remaining >= 1)
            {
                if (!IsValidClientName(request[j + 1]))
                {
                    return PendingReply.Error(RedisErrors.ClientNameInvalid);
                }

                client.Name = request.Length(j + 1) == 0 ? null : request.Text(j + 1);
                j++;
            }
            else
            {
                return PendingReply.Error($"ERR Syntax error in HELLO option '{request.TextUpToNul(j)}'");
            }
        }

        if (context.Options.AuthenticationRequired && !client.Authenticated)
        {
            return PendingReply.Error(RedisErrors.HelloNoAuth);
        }

        if (version != 0)
        {
            // The HELLO reply itself already uses the new protocol, as in Redis.
            client.Protocol = (RespProtocol)version;
        }

        return PendingReply.Of(
            Replies.Array(
                Replies.Bulk("server"), Replies.Bulk("redis"),
                Replies.Bulk("version"), Replies.Bulk(ServerIdentity.RedisVersion),
                Replies.Bulk("proto"), Replies.Integer((long)client.Protocol),
                Replies.Bulk("id"), Replies.Integer(client.Id),
                Replies.Bulk("mode"), Replies.Bulk("standalone"),
                Replies.Bulk("role"), Replies.Bulk("master"),
                Replies.Bulk("modules"), Replies.EmptyArray),
            ReplyShape.Map);
    }

    public static PendingReply ClientId(CommandContext context, RespRequest request) => PendingReply.Of(Replies.Integer(context.Client.Id));

    public static PendingReply ClientSetName(CommandContext context, RespRequest request)
    {
        if (!IsValidClientName(request[2]))
        {
            return PendingReply.Error(RedisErrors.ClientNameInvalid);
        }

        // An empty name removes the name, as in Redis.
        context.Client.Name = request.Length(2) == 0 ? null : request.Text(2);
        return PendingReply.Of(Replies.Ok);
    }

    public static PendingReply ClientGetName(CommandContext context, RespRequest request) =>
        PendingReply.Of(context.Client.Name is { } name ? Replies.Bulk(Encoding.Latin1.GetBytes(name)) : Replies.Nil);

    /// <summary>CLIENT SETINFO lib-name|lib-ver value (Redis 7.2; StackExchange.Redis sends it on connect).</summary>
    public static PendingReply ClientSetInfo(CommandContext context, RespRequest request)
    {
        var attribute = request[2];
        var isName = KeyCommands.Is(attribute, "lib-name"u8);
        if (!isName && !KeyCommands.Is(attribute, "lib-ver"u8))
        {
            return PendingReply.Error($"ERR Unrecognized option '{request.TextUpToNul(2)}'");
        }

        if (!IsValidClientName(request[3]))
        {
            return PendingReply.Error($"ERR {request.TextUpToNul(2)} cannot contain spaces, newlines or special characters.");
        }

        var value = request.Length(3) == 0 ? null : request.Text(3);
        if (isName)
        {
            context.Client.LibraryName = value;
        }
        else
        {
            context.Client.LibraryVersion = value;
        }

        return PendingReply.Of(Replies.Ok);
    }

    public static PendingReply ClientInfo(CommandContext context, RespRequest request) =>
        PendingReply.Of(Replies.Bulk(Encoding.Latin1.GetBytes(DescribeClient(context.Client, context.NowMs) + "\n")), ReplyShape.Verbatim);

    /// <summary>
    /// CLIENT LIST [TYPE normal|pubsub|master|replica|slave | ID id [id ...]], as Redis 7.0 reads it: TYPE only as the
    /// sole option, any signed 64-bit ids (one that names no client adds nothing), a client named twice listed twice.
    /// </summary>
    public static PendingReply ClientList(CommandContext context, RespRequest request)
    {
        var now = context.NowMs;
        var text = new StringBuilder();
        if (request.Count > 3 && KeyCommands.Is(request[2], "id"u8))
        {
            var clients = context.Registry.Snapshot().ToDictionary(client => client.Id);
            for (var j = 3; j < request.Count; j++)
            {
                if (!RespInteger.TryParse(request[j], out var id))
                {
                    return PendingReply.Error("ERR Invalid client ID");
                }

                if (clients.TryGetValue(id, out var client))
                {
                    text.Append(DescribeClient(client, now)).Append('\n');
                }
            }

            return PendingReply.Of(Replies.Bulk(Encoding.Latin1.GetBytes(text.ToString())), ReplyShape.Verbatim);
        }

        string? type = null;
        if (request.Count == 4 && KeyCommands.Is(request[2], "type"u8))
        {
            type = request.TextUpToNul(3).ToLowerInvariant();
            if (type is not ("normal" or "pubsub" or "master" or "replica" or "slave"))
            {
                return PendingReply.Error($"ERR Unknown client type '{request.TextUpToNul(3)}'");
            }
        }
        else if (request.Count != 2)
        {
            return PendingReply.Error(RedisErrors.Syntax);
        }

        foreach (var client in context.Registry.Snapshot())
        {
            var isPubSub = client.SubscriptionCount > 0;
            if ((type is "master" or "replica" or "slave")
                || (type == "pubsub" && !isPubSub)
                || (type == "normal" && isPubSub))
            {
                continue;
            }

            text.Append(DescribeClient(client, now)).Append('\n');
        }

        return PendingReply.Of(Replies.Bulk(Encoding.Latin1.GetBytes(text.ToString())), ReplyShape.Verbatim);
    }

    public static PendingReply ClientHelp(CommandContext context, RespRequest request) => Help(
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME",
        "    Return the name of the current connection.",
        "ID",
        "    Return the ID of the current connection.",
        "INFO",
        "    Return information about the current client connection.",
        "LIST [TYPE <normal|pubsub>] [ID <id> [<id> ...]]",
        "    Return information about client connections.",
        "SETINFO <option> <value>",
        "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
        "SETNAME <name>",
        "    Assign the name <name> to the current connection.",
        "HELP",
        "    Print this help.");

    public static PendingReply Subscribe(CommandContext context, RespRequest request) => SubscribeGeneric(context, request, pattern: false);

    public static PendingReply PSubscribe(CommandContext context, RespRequest request) => SubscribeGeneric(context, request, pattern: true);

    public static PendingReply Unsubscribe(CommandContext context, RespRequest request) => UnsubscribeGeneric(context, request, pattern: false);

    public static PendingReply PUnsubscribe(CommandContext context, RespRequest request) => UnsubscribeGeneric(context, request, pattern: true);

    /// <summary>
    /// Subscriptions are acknowledged exactly as Redis does, but nothing is ever published: the gateway has no pub/sub.
    /// This lets StackExchange.Redis subscribe to its configuration channel and keep the connection.
    /// </summary>
    private static PendingReply SubscribeGeneric(CommandContext context, RespRequest request, bool pattern)
    {
        var client = context.Client;
        var names = new string[request.Count - 1];
        for (var i = 1; i < request.Count; i++)
        {
            names[i - 1] = request.Text(i);
        }

        if (client.SubscribedBytes + client.SubscriptionBytesToAdd(names, pattern) > context.Options.MaxRequestBytes)
        {
            // Bounded as watched keys are: a connection cannot make the gateway hold names without end. None is added.
            return PendingReply.Error(SubscriptionsTooLarge(context.Options.MaxRequestBytes));
        }

        var pushes = new List<Reply>(names.Length);
        var kind = Replies.Bulk(pattern ? "psubscribe" : "subscribe");
        for (var i = 0; i < names.Length; i++)
        {
            client.Subscribe(names[i], pattern);
            pushes.Add(Replies.Array(kind, Replies.Bulk(request[i + 1]), Replies.Integer(client.SubscriptionCount)));
        }

        return PendingReply.Of(Replies.Array(pushes), ReplyShape.PushSequence);
    }

    public static string SubscriptionsTooLarge(long maxRequestBytes) =>
        $"ERR too many subscriptions: they would take more than {maxRequestBytes} bytes on this connection (Resp:MaxRequestBytes); UNSUBSCRIBE, PUNSUBSCRIBE or RESET forgets them";

    private static PendingReply UnsubscribeGeneric(CommandContext context, RespRequest request, bool pattern)
    {
        var client = context.Client;
        var set = pattern ? client.Patterns : client.Channels;
        var kind = Replies.Bulk(pattern ? "punsubscribe" : "unsubscribe");
        var pushes = new List<Reply>();
        if (request.Count == 1)
        {
            var all = set is null ? [] : new List<string>(set);
            all.Sort(StringComparer.Ordinal);
            foreach (var name in all)
            {
                client.Unsubscribe(name, pattern);
                pushes.Add(Replies.Array(kind, Replies.Bulk(Encoding.Latin1.GetBytes(name)), Replies.Integer(client.SubscriptionCount)));
            }

            if (pushes.Count == 0)
            {
                pushes.Add(Replies.Array(kind, Replies.Nil, Replies.Integer(client.SubscriptionCount)));
            }
        }
        else
        {
            for (var i = 1; i < request.Count; i++)
            {
                client.Unsubscribe(request.Text(i), pattern);
                pushes.Add(Replies.Array(kind, Replies.Bulk(request[i]), Replies.Integer(client.SubscriptionCount)));
            }
        }

        return PendingReply.Of(Replies.Array(pushes), ReplyShape.PushSequence);
    }

    /// <summary>A HELP subcommand's lines, as simple strings (Redis's addReplyHelp).</summary>
    internal static PendingReply Help(params string[] lines)
    {
        var items = new List<Reply>(lines.Length);
        foreach (var line in lines)
        {
            items.Add(Replies.Bulk(line));
        }

        return PendingReply.Of(Replies.Array(items), ReplyShape.StatusLines);
    }

    private static bool Authenticate(CommandContext context, ReadOnlySpan<byte> user, ReadOnlySpan<byte> password)
    {
        if (!user.SequenceEqual("default"u8))
        {
            return false;
        }

        if (!context.Options.AuthenticationRequired)
        {
            // The default user has no password (Redis's "nopass"): any password is accepted.
            return true;
        }

        var expected = Encoding.UTF8.GetBytes(context.Options.RequirePass!);
        return CryptographicOperations.FixedTimeEquals(expected, password);
    }

    // Redis's validateClientName: printable ASCII without spaces ('!' to '~').
    private static bool IsValidClientName(ReadOnlySpan<byte> name)
    {
        foreach (var b in name)
        {
            if (b is < (byte)'!' or > (byte)'~')
            {
                return false;
            }
        }

        return true;
    }

    private static string DescribeClient(ClientState client, long nowMs)
    {
        // In Redis's order: P, x, then r.
        var flags = (client.SubscriptionCount > 0 ? "P" : "") + (client.Transaction is null ? "" : "x") + (client.ReadOnly ? "r" : "");
        return string.Create(
            CultureInfo.InvariantCulture,
            $"id={client.Id} addr={client.RemoteAddress} laddr={client.LocalAddress} fd=-1 name={client.Name} " +
            $"age={(nowMs - client.ConnectedAtMs) / 1000} idle={(nowMs - client.LastCommandAtMs) / 1000} flags={(flags.Length == 0 ? "N" : flags)} " +
            $"db=0 sub={client.Channels?.Count ?? 0} psub={client.Patterns?.Count ?? 0} ssub=0 multi={client.Transaction?.Commands.Count ?? -1} qbuf=0 qbuf-free=0 argv-mem=0 " +
            $"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={client.LastCommandName} user=default redir=-1 " +
            $"resp={(int)client.Protocol} lib-name={client.LibraryName} lib-ver={client.LibraryVersion}");
    }
}
