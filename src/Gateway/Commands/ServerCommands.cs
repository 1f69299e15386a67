using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Dcache.Protocol;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>INFO, CONFIG, COMMAND and CLUSTER: what clients probe to learn about the server.</summary>
internal static class ServerCommands
{
    private static readonly string[] AllInfoSections = ["server", "clients", "stats", "replication", "cluster", "dcache", "keyspace"];

    /// <summary>INFO [section ...]: Redis's text format; the keyspace line comes from a cluster DBSIZE.</summary>
    public static PendingReply Info(CommandContext context, RespRequest request)
    {
        var sections = new HashSet<string>(StringComparer.Ordinal);
        if (request.Count == 1)
        {
            sections.UnionWith(AllInfoSections);
        }

        for (var i = 1; i < request.Count; i++)
        {
            var section = request.Text(i).ToLowerInvariant();
            if (section is "all" or "default" or "everything")
            {
                sections.UnionWith(AllInfoSections);
            }
            else
            {
                sections.Add(section);
            }
        }

        var text = new StringBuilder();
        foreach (var section in AllInfoSections)
        {
            if (section != "keyspace" && sections.Contains(section))
            {
                AppendSection(text, section, context);
            }
        }

        if (!sections.Contains("keyspace"))
        {
            return PendingReply.Of(Replies.Bulk(text.ToString()), ReplyShape.Verbatim);
        }

        var databaseSize = context.Read(new Command { Dbsize = new DbSizeRequest() }).Pending!;
        return new PendingReply(null, AppendKeyspaceAsync(text, databaseSize), ReplyShape.Verbatim);
    }

    private static async Task<Reply> AppendKeyspaceAsync(StringBuilder text, Task<Reply> databaseSize)
    {
        long keys = -1;
        try
        {
            var reply = await databaseSize.ConfigureAwait(false);
            if (reply.ResultCase == Reply.ResultOneofCase.Integer)
            {
                keys = reply.Integer;
            }
        }
        catch (Exception)
        {
            // INFO still answers when the cluster cannot count the keys: the keyspace section is then empty.
        }

        if (text.Length > 0)
        {
            text.Append("\r\n");
        }

        text.Append("# Keyspace\r\n");
        if (keys > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"db0:keys={keys},expires=0,avg_ttl=0\r\n");
        }

        return Replies.Bulk(text.ToString());
    }

    private static void AppendSection(StringBuilder text, string section, CommandContext context)
    {
        if (text.Length > 0)
        {
            text.Append("\r\n");
        }

        var invariant = CultureInfo.InvariantCulture;
        switch (section)
        {
            case "server":
                var uptime = ServerIdentity.Uptime;
                text.Append("# Server\r\n")
                    .Append(invariant, $"redis_version:{ServerIdentity.RedisVersion}\r\n")
                    .Append("redis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\n")
                    .Append("redis_mode:standalone\r\n")
                    .Append(invariant, $"os:{RuntimeInformation.OSDescription}\r\n")
                    .Append(invariant, $"arch_bits:{IntPtr.Size * 8}\r\n")
                    .Append(invariant, $"process_id:{Environment.ProcessId}\r\n")
                    .Append(invariant, $"run_id:{ServerIdentity.RunId}\r\n")
                    .Append(invariant, $"tcp_port:{PortOf(context.Client.LocalAddress)}\r\n")
                    .Append(invariant, $"server_time_usec:{context.NowMs * 1000}\r\n")
                    .Append(invariant, $"uptime_in_seconds:{(long)uptime.TotalSeconds}\r\n")
                    .Append(invariant, $"uptime_in_days:{(long)uptime.TotalDays}\r\n")
                    .Append(invariant, $"dcache_version:{ServerIdentity.DcacheVersion}\r\n")
                    .Append("dcache_role:gateway\r\n");
                break;
            case "clients":
                text.Append("# Clients\r\n")
                    .Append(invariant, $"connected_clients:{context.Registry.ConnectedClients}\r\n")
                    .Append(invariant, $"maxclients:{context.Options.MaxClients}\r\n");
                break;
            case "stats":
                text.Append("# Stats\r\n")
                    .Append(invariant, $"total_connections_received:{context.Registry.ConnectionsReceivedSinceReset}\r\n")
                    .Append(invariant, $"total_commands_processed:{context.Registry.CommandsProcessedSinceReset}\r\n")
                    .Append(invariant, $"rejected_connections:{context.Registry.ConnectionsRejectedSinceReset}\r\n");
                break;
            case "replication":
                // The gateway accepts writes, so clients must see a primary; replication happens behind it.
                text.Append("# Replication\r\n")
                    .Append("role:master\r\n")
                    .Append("connected_slaves:0\r\n")
                    .Append("master_failover_state:no-failover\r\n")
                    .Append(invariant, $"master_replid:{ServerIdentity.RunId}\r\n")
                    .Append("master_replid2:0000000000000000000000000000000000000000\r\n")
                    .Append("master_repl_offset:0\r\n");
                break;
            case "cluster":
                text.Append("# Cluster\r\ncluster_enabled:0\r\n");
                break;
            case "dcache":
                text.Append("# Dcache\r\n");
                try
                {
                    var view = context.Cluster.View;
                    text.Append(invariant, $"dcache_leader_id:{view.LeaderId}\r\n")
                        .Append(invariant, $"dcache_leader_address:{view.LeaderAddress}\r\n")
                        .Append(invariant, $"dcache_nodes:{view.Nodes}\r\n")
                        .Append(invariant, $"dcache_healthy_nodes:{view.HealthyNodes}\r\n");
                }
                catch (Exception)
                {
                    // The view is informational; INFO must answer even if the cluster client cannot describe itself.
                }

                // A gateway started with LocalReads serves this connection's reads locally whatever it asked for.
                var local = context.Client.ReadOnly || context.Cluster is LocalReadsCluster;
                text.Append(invariant, $"dcache_read_mode:{(local ? "local" : "linearizable")}\r\n");
                break;
        }
    }

    private static string PortOf(string address)
    {
        var colon = address.LastIndexOf(':');
        return colon >= 0 ? address[(colon + 1)..] : "0";
    }

    /// <summary>The parameters CONFIG GET answers: the ones clients and tools probe (StackExchange.Redis, redis-benchmark).</summary>
    private static (string Name, string? Alias, Func<RespOptions, string> Value)[] ConfigParameters { get; } =
    [
        ("appendonly", null, static _ => "no"),
        ("client-query-buffer-limit", null, static o => o.MaxRequestBytes.ToString(CultureInfo.InvariantCulture)),
        ("cluster-enabled", null, static _ => "no"),
        ("databases", null, static _ => "1"),
        ("maxclients", null, static o => o.MaxClients.ToString(CultureInfo.InvariantCulture)),
        ("proto-max-bulk-len", null, static o => o.MaxBulkLength.ToString(CultureInfo.InvariantCulture)),
        ("replica-read-only", "slave-read-only", static _ => "yes"),
        ("save", null, static _ => ""),
        ("tcp-keepalive", null, static o => o.TcpKeepAliveSeconds.ToString(CultureInfo.InvariantCulture)),
        ("timeout", null, static o => o.IdleTimeoutSeconds.ToString(CultureInfo.InvariantCulture)),
    ];

    /// <summary>
    /// CONFIG GET parameter [parameter ...], as Redis 7.0: a name without a glob character is looked up exactly (any case,
    /// the name or an alias, answered under the name as given); a glob pattern (up to a NUL byte, as C's string functions
    /// read it) matches names and aliases alike. Each name is answered once.
    /// </summary>
    public static PendingReply ConfigGet(CommandContext context, RespRequest request)
    {
        var matches = new List<(string Name, string Value)>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (var i = 2; i < request.Count; i++)
        {
            var pattern = RespRequest.UpToNul(request[i]);
            var isGlob = pattern.IndexOfAny("[*?"u8) >= 0;
            var exact = request.Text(i);
            foreach (var (name, alias, value) in ConfigParameters)
            {
                foreach (var candidate in (ReadOnlySpan<string?>)[name, alias])
                {
                    if (candidate is null)
                    {
                        continue;
                    }

                    if (isGlob)
                    {
                        if (GlobPattern.Matches(pattern, Encoding.ASCII.GetBytes(candidate), ignoreCase: true) && seen.Add(candidate))
                        {
                            matches.Add((candidate, value(context.Options)));
                        }
                    }
                    else if (exact.Equals(candidate, StringComparison.OrdinalIgnoreCase) && seen.Add(exact))
                    {
                        matches.Add((exact, value(context.Options)));
                    }
                }
            }
        }

        var items = new List<Reply>(matches.Count * 2);
        foreach (var (name, value) in matches)
        {
            items.Add(Replies.Bulk(name));
            items.Add(Replies.Bulk(value));
        }

        return PendingReply.Of(Replies.Array(items), ReplyShape.Map);
    }

    // Redis 7.0 checks the pairs before the names: an odd count is an arity error, whatever the names.
    public static PendingReply ConfigSet(CommandContext context, RespRequest request) => request.Count % 2 == 1
        ? PendingReply.Error(RedisErrors.WrongArity("config|set"))
        : PendingReply.Error($"ERR Unknown option or number of arguments for CONFIG SET - '{request.TextUpToNul(2)}'");

    public static PendingReply ConfigResetStat(CommandContext context, RespRequest request)
    {
        context.Registry.ResetStats();
        return PendingReply.Of(Replies.Ok);
    }

    public static PendingReply ConfigRewrite(CommandContext context, RespRequest request) => PendingReply.Error(RedisErrors.NoConfigFile);

    public static PendingReply ConfigHelp(CommandContext context, RespRequest request) => ConnectionCommands.Help(
        "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GET <pattern>",
        "    Return parameters matching the glob-like <pattern> and their values.",
        "SET <directive> <value>",
        "    Refused: nothing is settable at run time (set options in the gateway's configuration and restart it).",
        "RESETSTAT",
        "    Reset statistics reported by the INFO command.",
        "REWRITE",
        "    Refused: the gateway has no config file to rewrite.",
        "HELP",
        "    Print this help.");

    public static PendingReply Cluster(CommandContext context, RespRequest request) => PendingReply.Error(RedisErrors.ClusterDisabled);

    /// <summary>COMMAND: a table of the supported commands in Redis 7.0's shape.</summary>
    public static PendingReply Command(CommandContext context, RespRequest request)
    {
        var items = new List<Reply>();
        foreach (var spec in CommandTable.All)
        {
            items.Add(Describe(spec));
        }

        return PendingReply.Of(Replies.Array(items), ReplyShape.CommandDescriptions);
    }

    public static PendingReply CommandCount(CommandContext context, RespRequest request) => PendingReply.Of(Replies.Integer(CommandTable.All.Count));

    public static PendingReply CommandInfo(CommandContext context, RespRequest request)
    {
        if (request.Count == 2)
        {
            return Command(context, request);
        }

        var items = new List<Reply>(request.Count - 2);
        for (var i = 2; i < request.Count; i++)
        {
            items.Add(CommandTable.FindByFullName(request[i]) is { } spec ? Describe(spec) : Replies.Nil);
        }

        return PendingReply.Of(Replies.Array(items), ReplyShape.CommandDescriptions);
    }

    /// <summary>
    /// COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]: the names of the commands and of their
    /// subcommands ("client|setname"), as Redis 7.0 lists them. There are no modules, and the gateway's commands belong to
    /// no ACL category (COMMAND INFO shows none), so those filters match nothing; PATTERN is a case-insensitive glob.
    /// </summary>
    public static PendingReply CommandList(CommandContext context, RespRequest request)
    {
        Func<string, bool> filter = static _ => true;
        for (var i = 2; i < request.Count; i++)
        {
            if (!KeyCommands.Is(request[i], "filterby"u8) || request.Count - 1 - i != 2)
            {
                return PendingReply.Error(RedisErrors.Syntax);
            }

            var kind = request[i + 1];
            if (KeyCommands.Is(kind, "pattern"u8))
            {
                var pattern = request.Memory(i + 2);
                filter = name => GlobPattern.Matches(pattern.Span, Encoding.ASCII.GetBytes(name), ignoreCase: true);
            }
            else if (KeyCommands.Is(kind, "module"u8) || KeyCommands.Is(kind, "aclcat"u8))
            {
                filter = static _ => false;
            }
            else
            {
                return PendingReply.Error(RedisErrors.Syntax);
            }

            i += 2;
        }

        var items = new List<Reply>();
        foreach (var spec in CommandTable.All)
        {
            AddNames(spec);
        }

        return PendingReply.Of(Replies.Array(items));

        void AddNames(CommandSpec spec)
        {
            if (filter(spec.Name))
            {
                items.Add(Replies.Bulk(spec.Name));
            }

            foreach (var subcommand in spec.Subcommands?.Values ?? [])
            {
                AddNames(subcommand);
            }
        }
    }

    /// <summary>COMMAND DOCS: an empty map. Clients (redis-cli) then fall back to their built-in help.</summary>
    public static PendingReply CommandDocs(CommandContext context, RespRequest request) => PendingReply.Of(Replies.EmptyArray, ReplyShape.Map);

    public static PendingReply CommandHelp(CommandContext context, RespRequest request) => ConnectionCommands.Help(
        "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "(no subcommand)",
        "    Return details about all commands.",
        "COUNT",
        "    Return the total number of commands in this server.",
        "LIST",
        "    Return a list of all commands in this server.",
        "INFO [<command-name> ...]",
        "    Return details about multiple commands.",
        "DOCS [<command-name> ...]",
        "    Return documentation details about multiple commands (none here).",
        "HELP",
        "    Print this help.");

    private static Reply Describe(CommandSpec spec)
    {
        var flags = new List<Reply>();
        if ((spec.Flags & CommandFlags.Write) != 0)
        {
            flags.Add(Replies.Bulk("write"));
        }

        if ((spec.Flags & (CommandFlags.Read | CommandFlags.ReadsKeyspace)) != 0)
        {
            flags.Add(Replies.Bulk("readonly"));
        }

        if ((spec.Flags & CommandFlags.Fast) != 0)
        {
            flags.Add(Replies.Bulk("fast"));
        }

        if ((spec.Flags & CommandFlags.NoAuth) != 0)
        {
            flags.Add(Replies.Bulk("no_auth"));
        }

        if ((spec.Flags & CommandFlags.SubscriberContext) != 0 && spec.Name.Contains("subscribe", StringComparison.Ordinal))
        {
            flags.Add(Replies.Bulk("pubsub"));
        }

        var subcommands = new List<Reply>();
        if (spec.Subcommands is not null)
        {
            foreach (var subcommand in spec.Subcommands.Values)
            {
                subcommands.Add(Describe(subcommand));
            }
        }

        return Replies.Array(
            Replies.Bulk(spec.Name),
            Replies.Integer(spec.Arity),
            Replies.Array(flags),
            Replies.Integer(spec.FirstKey),
            Replies.Integer(spec.FirstKey == 0 ? 0 : spec.LastKey),
            Replies.Integer(spec.FirstKey == 0 ? 0 : spec.KeyStep),
            Replies.EmptyArray,
            Replies.EmptyArray,
            Replies.EmptyArray,
            Replies.Array(subcommands));
    }
}

/// <summary>
/// The fields of a command's description, in Redis 7.0's order (COMMAND, COMMAND INFO); ReplyRenderer gives each the
/// RESP type Redis gives it.
/// </summary>
internal static class CommandDescriptionFields
{
    public const int Name = 0;
    public const int Arity = 1;

    /// <summary>A set of status words ("readonly", "fast").</summary>
    public const int Flags = 2;
    public const int FirstKey = 3;
    public const int LastKey = 4;
    public const int KeyStep = 5;

    /// <summary>A set of status words ("@read"); the gateway's commands have none.</summary>
    public const int AclCategories = 6;

    /// <summary>A set of bulk strings; none here.</summary>
    public const int Tips = 7;

    /// <summary>A set of maps; none here.</summary>
    public const int KeySpecs = 8;

    /// <summary>The subcommands' descriptions.</summary>
    public const int Subcommands = 9;
}
