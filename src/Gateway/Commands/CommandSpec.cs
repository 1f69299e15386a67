using System.Collections.Frozen;
using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Commands;

[Flags]
internal enum CommandFlags
{
    None = 0,

    /// <summary>Changes the cache: linearizable write through the leader, with a write session.</summary>
    Write = 1,

    /// <summary>Reads keys from the cache (linearizable, or local after READONLY).</summary>
    Read = 2,

    /// <summary>Reads the whole keyspace (DBSIZE, INFO keyspace): ordered after every write before it.</summary>
    ReadsKeyspace = 4,

    /// <summary>Allowed before AUTH when a password is set.</summary>
    NoAuth = 8,

    /// <summary>Allowed on a RESP2 connection that has subscriptions.</summary>
    SubscriberContext = 16,

    /// <summary>O(1) or O(log n): shown as "fast" by COMMAND.</summary>
    Fast = 32,

    /// <summary>Only announced by COMMAND; answers from connection or gateway state.</summary>
    Connection = 64,

    /// <summary>Writes the whole keyspace (FLUSHALL): ordered after every command before it and before every one after it.</summary>
    WritesKeyspace = 128,
}

internal delegate PendingReply CommandHandler(CommandContext context, RespRequest request);

/// <summary>
/// One command of the table: its Redis name, arity (n = exactly n arguments with the name, -n = at least n), key
/// positions (for ordering pipelined commands that touch the same key) and handler. A container command (CLIENT,
/// CONFIG, COMMAND) has subcommands named "container|sub" as Redis 7 names them in errors.
/// </summary>
internal sealed class CommandSpec
{
    public CommandSpec(string name, int arity, CommandFlags flags, CommandHandler handler, int firstKey = 0, int lastKey = 0, int keyStep = 0)
    {
        Name = name;
        Arity = arity;
        Flags = flags;
        Handler = handler;
        FirstKey = firstKey;
        LastKey = lastKey;
        KeyStep = keyStep;
    }

    /// <summary>Lower-case name as Redis prints it in errors: "get", "client|setname".</summary>
    public string Name { get; }

    public int Arity { get; }

    public CommandFlags Flags { get; }

    public CommandHandler Handler { get; }

    /// <summary>Index of the first key argument; 0 when the command has no keys.</summary>
    public int FirstKey { get; }

    /// <summary>Index of the last key argument; negative counts from the end (-1 = last argument).</summary>
    public int LastKey { get; }

    public int KeyStep { get; }

    public FrozenDictionary<string, CommandSpec>? Subcommands { get; init; }

    /// <summary>The lookup of subcommands by bytes, without allocating; valid when <see cref="Subcommands"/> is set.</summary>
    public FrozenDictionary<string, CommandSpec>.AlternateLookup<ReadOnlySpan<char>> SubcommandLookup { get; init; }

    public bool TouchesCluster => (Flags & (CommandFlags.Write | CommandFlags.Read | CommandFlags.ReadsKeyspace | CommandFlags.WritesKeyspace)) != 0;

    public bool ArityMatches(int count) => Arity >= 0 ? count == Arity : count >= -Arity;

    /// <summary>The key arguments' index range for a request (empty when none).</summary>
    public (int First, int Last, int Step) KeyRange(int argumentCount)
    {
        if (FirstKey == 0 || argumentCount <= FirstKey)
        {
            return (0, -1, 1);
        }

        var last = LastKey >= 0 ? LastKey : argumentCount + LastKey;
        return (FirstKey, Math.Min(last, argumentCount - 1), Math.Max(1, KeyStep));
    }
}
