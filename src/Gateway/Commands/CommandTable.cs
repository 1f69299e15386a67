using System.Collections.Frozen;
using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Commands;

/// <summary>Every command the gateway understands, looked up case-insensitively from the request's bytes without allocating.</summary>
internal static class CommandTable
{
    private const int LongestName = 32;

    private const CommandFlags ReadKey = CommandFlags.Read | CommandFlags.Fast;
    private const CommandFlags WriteKey = CommandFlags.Write;
    private const CommandFlags Local = CommandFlags.Connection | CommandFlags.Fast;

    public static IReadOnlyList<CommandSpec> All { get; } =
    [
        // Cache commands: one cluster command each.
        new("get", 2, ReadKey, KeyCommands.Get, 1, 1, 1),
        new("set", -3, WriteKey, KeyCommands.Set, 1, 1, 1),
        new("put", 3, WriteKey, KeyCommands.Put, 1, 1, 1),
        new("setex", 4, WriteKey, KeyCommands.SetWithSeconds, 1, 1, 1),
        new("psetex", 4, WriteKey, KeyCommands.SetWithMilliseconds, 1, 1, 1),
        new("setnx", 3, WriteKey | CommandFlags.Fast, KeyCommands.SetIfAbsent, 1, 1, 1),
        new("getset", 3, WriteKey | CommandFlags.Fast, KeyCommands.GetAndSet, 1, 1, 1),
        new("del", -2, WriteKey, KeyCommands.Delete, 1, -1, 1),
        new("unlink", -2, WriteKey | CommandFlags.Fast, KeyCommands.Delete, 1, -1, 1),
        new("exists", -2, ReadKey, KeyCommands.Exists, 1, -1, 1),
        new("mget", -2, ReadKey, KeyCommands.MultiGet, 1, -1, 1),
        new("mset", -3, WriteKey, KeyCommands.MultiSet, 1, -1, 2),
        new("incr", 2, WriteKey | CommandFlags.Fast, KeyCommands.Increment, 1, 1, 1),
        new("incrby", 3, WriteKey | CommandFlags.Fast, KeyCommands.IncrementBy, 1, 1, 1),
        new("decr", 2, WriteKey | CommandFlags.Fast, KeyCommands.Decrement, 1, 1, 1),
        new("decrby", 3, WriteKey | CommandFlags.Fast, KeyCommands.DecrementBy, 1, 1, 1),
        new("expire", -3, WriteKey | CommandFlags.Fast, KeyCommands.Expire, 1, 1, 1),
        new("pexpire", -3, WriteKey | CommandFlags.Fast, KeyCommands.PExpire, 1, 1, 1),
        new("expireat", -3, WriteKey | CommandFlags.Fast, KeyCommands.ExpireAt, 1, 1, 1),
        new("pexpireat", -3, WriteKey | CommandFlags.Fast, KeyCommands.PExpireAt, 1, 1, 1),
        new("persist", 2, WriteKey | CommandFlags.Fast, KeyCommands.Persist, 1, 1, 1),
        new("ttl", 2, ReadKey, KeyCommands.Ttl, 1, 1, 1),
        new("pttl", 2, ReadKey, KeyCommands.PTtl, 1, 1, 1),
        new("dbsize", 1, CommandFlags.ReadsKeyspace | CommandFlags.Fast, KeyCommands.DatabaseSize),
        new("strlen", 2, ReadKey, KeyCommands.StringLength, 1, 1, 1),
        new("getrange", 4, CommandFlags.Read, KeyCommands.GetRange, 1, 1, 1),
        new("substr", 4, CommandFlags.Read, KeyCommands.GetRange, 1, 1, 1),
        new("type", 2, ReadKey, KeyCommands.Type, 1, 1, 1),
        new("expiretime", 2, ReadKey, KeyCommands.ExpireTime, 1, 1, 1),
        new("pexpiretime", 2, ReadKey, KeyCommands.PExpireTime, 1, 1, 1),

        // TOUCH counts the keys that exist: with no access times to update it is EXISTS.
        new("touch", -2, ReadKey, KeyCommands.Exists, 1, -1, 1),
        new("keys", 2, CommandFlags.ReadsKeyspace, KeyCommands.Keys),
        new("scan", -2, CommandFlags.ReadsKeyspace, KeyCommands.Scan),
        new("getdel", 2, WriteKey | CommandFlags.Fast, KeyCommands.GetDelete, 1, 1, 1),
        new("getex", -2, WriteKey | CommandFlags.Fast, KeyCommands.GetEx, 1, 1, 1),
        new("append", 3, WriteKey | CommandFlags.Fast, KeyCommands.Append, 1, 1, 1),
        new("incrbyfloat", 3, WriteKey | CommandFlags.Fast, KeyCommands.IncrementByFloat, 1, 1, 1),
        new("msetnx", -3, WriteKey, KeyCommands.MultiSetIfNoneExist, 1, -1, 2),
        new("rename", 3, WriteKey, KeyCommands.Rename, 1, 2, 1),
        new("renamenx", 3, WriteKey | CommandFlags.Fast, KeyCommands.RenameIfAbsent, 1, 2, 1),
        new("flushall", -1, WriteKey | CommandFlags.WritesKeyspace, KeyCommands.FlushAll),
        new("flushdb", -1, WriteKey | CommandFlags.WritesKeyspace, KeyCommands.FlushAll),
        new("setrange", 4, WriteKey, KeyCommands.SetRange, 1, 1, 1),

        // COPY reads its first key and writes its second; a pipeline orders it like a write of both, as RENAME.
        new("copy", -3, WriteKey, KeyCommands.Copy, 1, 2, 1),
        new("randomkey", 1, CommandFlags.ReadsKeyspace, KeyCommands.RandomKey),

        // EXEC sends the queued commands as one write; it orders like FLUSHALL in a pipeline, after every command before it
        // and before every one after it, since its keys are those of the commands it carries. WATCH reads its keys'
        // revisions from the cluster, and it, UNWATCH and DISCARD order the same way, so that a pipelined WATCH reads
        // after the connection's earlier writes and its watches are in place (or forgotten) before what follows runs.
        new("multi", 1, Local, TransactionCommands.Multi),
        new("exec", 1, CommandFlags.Connection | CommandFlags.WritesKeyspace, TransactionCommands.Exec),
        new("discard", 1, Local | CommandFlags.WritesKeyspace, TransactionCommands.Discard),
        new("watch", -2, Local | CommandFlags.WritesKeyspace, TransactionCommands.Watch, 1, -1, 1),
        new("unwatch", 1, Local | CommandFlags.WritesKeyspace, TransactionCommands.Unwatch),

        // Connection and server commands, answered by the gateway.
        new("ping", -1, Local | CommandFlags.SubscriberContext, ConnectionCommands.Ping),
        new("echo", 2, Local, ConnectionCommands.Echo),
        new("quit", -1, Local | CommandFlags.NoAuth | CommandFlags.SubscriberContext, ConnectionCommands.Quit),
        new("hello", -1, Local | CommandFlags.NoAuth, ConnectionCommands.Hello),
        new("auth", -2, Local | CommandFlags.NoAuth, ConnectionCommands.Auth),
        new("select", 2, Local, ConnectionCommands.Select),
        new("readonly", 1, Local, ConnectionCommands.ReadOnly),
        new("readwrite", 1, Local, ConnectionCommands.ReadWrite),
        new("reset", 1, Local | CommandFlags.NoAuth | CommandFlags.SubscriberContext, ConnectionCommands.Reset),
        new("time", 1, Local, ConnectionCommands.Time),
        new("info", -1, CommandFlags.Connection | CommandFlags.ReadsKeyspace, ServerCommands.Info),
        Container("client", -2, WithoutSubcommand,
        [
            new("client|id", 2, Local, ConnectionCommands.ClientId),
            new("client|setname", 3, Local, ConnectionCommands.ClientSetName),
            new("client|getname", 2, Local, ConnectionCommands.ClientGetName),
            new("client|info", 2, Local, ConnectionCommands.ClientInfo),
            new("client|list", -2, CommandFlags.Connection, ConnectionCommands.ClientList),
            new("client|setinfo", 4, Local, ConnectionCommands.ClientSetInfo),
            new("client|help", 2, Local, ConnectionCommands.ClientHelp),
        ]),
        Container("config", -2, WithoutSubcommand,
        [
            new("config|get", -3, CommandFlags.Connection, ServerCommands.ConfigGet),
            new("config|set", -4, CommandFlags.Connection, ServerCommands.ConfigSet),
            new("config|resetstat", 2, CommandFlags.Connection, ServerCommands.ConfigResetStat),
            new("config|rewrite", 2, CommandFlags.Connection, ServerCommands.ConfigRewrite),
            new("config|help", 2, Local, ServerCommands.ConfigHelp),
        ]),
        Container("command", -1, ServerCommands.Command,
        [
            new("command|count", 2, Local, ServerCommands.CommandCount),
            new("command|docs", -2, CommandFlags.Connection, ServerCommands.CommandDocs),
            new("command|info", -2, CommandFlags.Connection, ServerCommands.CommandInfo),
            new("command|list", -2, CommandFlags.Connection, ServerCommands.CommandList),
            new("command|help", 2, Local, ServerCommands.CommandHelp),
        ]),
        // As a Redis without cluster support answers every CLUSTER subcommand; Redis still knows their names and arities,
        // so an unknown subcommand or a wrong arity gets its own error first.
        Container("cluster", -2, WithoutSubcommand,
        [
            .. ClusterSubcommands.Select(static subcommand => new CommandSpec("cluster|" + subcommand.Name, subcommand.Arity, CommandFlags.Connection, ServerCommands.Cluster)),
        ]),
        new("subscribe", -2, CommandFlags.Connection | CommandFlags.SubscriberContext, ConnectionCommands.Subscribe),
        new("unsubscribe", -1, CommandFlags.Connection | CommandFlags.SubscriberContext, ConnectionCommands.Unsubscribe),
        new("psubscribe", -2, CommandFlags.Connection | CommandFlags.SubscriberContext, ConnectionCommands.PSubscribe),
        new("punsubscribe", -1, CommandFlags.Connection | CommandFlags.SubscriberContext, ConnectionCommands.PUnsubscribe),
    ];

    /// <summary>Redis 7.0's CLUSTER subcommands and their arities.</summary>
    private static (string Name, int Arity)[] ClusterSubcommands =>
    [
        ("addslots", -3), ("addslotsrange", -4), ("bumpepoch", 2), ("count-failure-reports", 3), ("countkeysinslot", 3),
        ("delslots", -3), ("delslotsrange", -4), ("failover", -2), ("flushslots", 2), ("forget", 3), ("getkeysinslot", 4),
        ("help", 2), ("info", 2), ("keyslot", 3), ("links", 2), ("meet", -4), ("myid", 2), ("nodes", 2), ("replicas", 3),
        ("replicate", 3), ("reset", -2), ("saveconfig", 2), ("set-config-epoch", 3), ("setslot", -4), ("shards", 2),
        ("slaves", 3), ("slots", 2),
    ];

    private static readonly FrozenDictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> ByName =
        ToLookup(All, static spec => spec.Name).GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>The command named by the bytes (any case), or null.</summary>
    public static CommandSpec? Find(ReadOnlySpan<byte> name) => Find(ByName, name);

    /// <summary>
    /// A command or subcommand by its full name ("get", "client|setname"; any case), as COMMAND INFO looks names up, or null
    /// (also for a subcommand of a command that has none).
    /// </summary>
    public static CommandSpec? FindByFullName(ReadOnlySpan<byte> fullName)
    {
        var bar = fullName.IndexOf((byte)'|');
        if (bar < 0)
        {
            return Find(fullName);
        }

        var container = Find(fullName[..bar]);
        return container is null ? null : FindSubcommand(container, fullName[(bar + 1)..]);
    }

    /// <summary>A container's subcommand named by the bytes (any case), or null.</summary>
    public static CommandSpec? FindSubcommand(CommandSpec container, ReadOnlySpan<byte> name) =>
        container.Subcommands is null ? null : Find(container.SubcommandLookup, name);

    private static CommandSpec? Find(FrozenDictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> lookup, ReadOnlySpan<byte> name)
    {
        if (name.Length > LongestName)
        {
            return null;
        }

        Span<char> characters = stackalloc char[name.Length];
        for (var i = 0; i < name.Length; i++)
        {
            characters[i] = (char)name[i];
        }

        return lookup.TryGetValue(characters, out var spec) ? spec : null;
    }

    // CLIENT, CONFIG and CLUSTER need a subcommand; their arity (-2) refuses them before this runs.
    private static PendingReply WithoutSubcommand(CommandContext context, RespRequest request) =>
        PendingReply.Error(RedisErrors.WrongArity(request.Text(0).ToLowerInvariant()));

    private static CommandSpec Container(string name, int arity, CommandHandler handler, CommandSpec[] subcommands)
    {
        var byName = ToLookup(subcommands, static spec => spec.Name[(spec.Name.IndexOf('|', StringComparison.Ordinal) + 1)..]);
        return new CommandSpec(name, arity, CommandFlags.Connection, handler)
        {
            Subcommands = byName,
            SubcommandLookup = byName.GetAlternateLookup<ReadOnlySpan<char>>(),
        };
    }

    private static FrozenDictionary<string, CommandSpec> ToLookup(IEnumerable<CommandSpec> specs, Func<CommandSpec, string> key) =>
        specs.ToFrozenDictionary(key, StringComparer.OrdinalIgnoreCase);
}
