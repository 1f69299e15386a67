namespace Dcache.Ctl;

/// <summary>Dispatches `dcachectl COMMAND [options]`. Exit codes: 0 success, 1 failure, 2 usage error.</summary>
internal static class CommandLine
{
    private const string Usage = """
        usage: dcachectl COMMAND [options]

        commands:
          dev      start a local cluster (3 nodes and a gateway on 127.0.0.1:6379, data under ./data) until Ctrl-C
                   options: --nodes N (default 3)  --data DIR (default ./data)  --base-port P (default 7001)
                            --gateway-port P (default 6379)  --node-dll PATH  --gateway-dll PATH (default: the built ones)
                            --read-routing leader|members (default leader: the nodes share this machine's cores)
          status   show every node's role, term, commit and applied index, voters and learners: the
                   endpoints given and every member their membership names
          snapshot save FILE
                   stream a consistent snapshot (every write acknowledged before the call) from the first of --endpoints
                   that serves one into FILE; options as for status
          snapshot verify FILE
                   check FILE's checksum and decode it; print its cluster id, index, term, members and key count
          snapshot restore FILE --data DIR --node-id N --cluster-id NEWID --initial-cluster 1=URL,2=URL,...
                   offline: seed the empty data directory of member N of a NEW cluster from FILE (run once per member)
          recover inspect --data DIR
                   offline: print a stopped node's last index and term and its commit index
          recover force-new-cluster --data DIR --cluster-id NEWID
                   offline: rewrite a stopped survivor's data so it restarts alone as cluster NEWID with its committed
                   data (entries after its commit index are discarded); add members back afterwards
          member list                              the leader's view: each member's role, address, log progress
          member add --id N --address URL          add node N (gRPC address URL) as a learner; it receives the log
          member promote --id N [--force yes]      make learner N a voter (refused until it has caught up)
          member remove --id N [--force yes]       remove node N (the leader too: it hands over first); both are
                                                   refused when the voters left that answer the leader would be
                                                   fewer than a quorum, unless --force yes
          member update --id N --address URL       move node N to a new gRPC address URL (its role is kept): start
                                                   it there first; every member then reaches it there, whatever
                                                   their InitialCluster says
          leader transfer [--to ID]                hand leadership to node ID (default: the most up-to-date voter that still answers)

        options of status, member and leader:
          --endpoints URL[,URL...]  nodes' gRPC addresses (default the dev cluster's); member and leader commands
                                    find the leader from any of them
          --cluster-id ID  --secret S  (default the dev cluster's)

        exit codes: 0 done, 1 failed (the message says why), 2 usage error (an option the command does not
        take, or one given twice, is one)
        """;

    public static async Task<int> RunAsync(string[] args)
    {
        // Asked for after a command too (`member --help`): that used to be an unknown option or verb, exit code 2.
        if (args.Length == 0 || args[0] is "help" || args.Any(arg => arg is "-h" or "--help"))
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }

        // Commands with sub-commands and positional arguments parse their own options.
        switch (args[0])
        {
            case "snapshot":
                return await SnapshotCommands.RunAsync(args[1..]).ConfigureAwait(false);
            case "recover":
                return await RecoverCommands.RunAsync(args[1..]).ConfigureAwait(false);
        }

        // `member add ...` and `leader transfer ...` name a verb before their options.
        var verb = args[0] is "member" or "leader" && args.Length > 1 ? args[1] : null;
        Options options;
        try
        {
            if (args[0] is "member" or "leader" && verb is null)
            {
                throw new FormatException($"'{args[0]}' needs a verb: {(args[0] == "member" ? "list, add, promote, remove or update" : "transfer")}");
            }

            options = Options.Parse(args.AsSpan(verb is null ? 1 : 2), KnownOptions(args[0], verb));
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"dcachectl: {ex.Message}");
            return 2;
        }

        switch (args[0])
        {
            case "dev":
                return await CommandFailures.ReportAsync("dev", () => DevCluster.RunAsync(options)).ConfigureAwait(false);
            case "status":
                return await RunOrUsageErrorAsync(() => StatusCommand.RunAsync(options)).ConfigureAwait(false);
            case "member":
                return await RunOrUsageErrorAsync(() => MemberCommands.RunMemberAsync(verb!, options)).ConfigureAwait(false);
            case "leader":
                return await RunOrUsageErrorAsync(() => MemberCommands.RunLeaderAsync(verb!, options)).ConfigureAwait(false);
            default:
                Console.Error.WriteLine($"dcachectl: unknown command '{args[0]}'");
                Console.Error.WriteLine(Usage);
                return 2;
        }
    }

    /// <summary>The options each command takes; an unknown command or verb takes the connection options, and is reported as unknown afterwards.</summary>
    private static string[] KnownOptions(string command, string? verb) => (command, verb) switch
    {
        ("dev", _) => ["nodes", "data", "base-port", "gateway-port", "read-routing", "node-dll", "gateway-dll"],
        ("member", "add" or "update") => [.. Options.Connection, "id", "address"],
        ("member", "promote" or "remove") => [.. Options.Connection, "id", "force"],
        ("leader", "transfer") => [.. Options.Connection, "to"],
        _ => Options.Connection,
    };

    private static async Task<int> RunOrUsageErrorAsync(Func<Task<int>> command)
    {
        try
        {
            return await command().ConfigureAwait(false);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"dcachectl: {ex.Message}");
            return 2;
        }
    }
}

/// <summary>--name value options, with defaults that match `dcachectl dev`.</summary>
internal sealed class Options
{
    private readonly Dictionary<string, string> _values = [];

    /// <summary>The options of the commands that reach a cluster.</summary>
    public static readonly string[] Connection = ["endpoints", "cluster-id", "secret"];

    /// <summary>
    /// Parses --name value pairs. A name not in <paramref name="known"/>, or one given twice, is a usage error: a
    /// misspelt option must not fall back to a default (another node, the dev cluster's endpoints) and act on it.
    /// </summary>
    public static Options Parse(ReadOnlySpan<string> args, IReadOnlyCollection<string> known)
    {
        var options = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
            {
                throw new FormatException($"expected --name value, got '{args[i]}'");
            }

            var name = args[i][2..];
            if (!known.Contains(name))
            {
                throw new FormatException(known.Count == 0
                    ? $"unknown option --{name} (this command takes none)"
                    : $"unknown option --{name} (this command takes {string.Join(", ", known.Select(k => $"--{k}"))})");
            }

            if (i + 1 >= args.Length)
            {
                throw new FormatException(name == "force" ? "--force has no value (--force yes)" : $"--{name} has no value");
            }

            if (args[i + 1].StartsWith("--", StringComparison.Ordinal) && known.Contains(args[i + 1][2..]))
            {
                // `--secret --cluster-id X`: the value was forgotten, and the next option would be taken for it.
                throw new FormatException($"{args[i]} has no value (the next argument, {args[i + 1]}, is an option)");
            }

            if (!options._values.TryAdd(name, args[++i]))
            {
                throw new FormatException($"--{name} is given twice");
            }
        }

        return options;
    }

    public string Get(string name, string fallback) => _values.GetValueOrDefault(name, fallback);

    public int GetInt(string name, int fallback) =>
        _values.TryGetValue(name, out var text)
            ? int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var value) ? value : throw new FormatException($"--{name} must be a number")
            : fallback;

    public bool Has(string name) => _values.ContainsKey(name);

    public string Require(string name) =>
        _values.TryGetValue(name, out var text) && text.Length > 0 ? text : throw new FormatException($"--{name} is required");

    /// <summary>A node id: a positive number.</summary>
    public ulong GetId(string name) =>
        ulong.TryParse(Require(name), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id) && id != 0
            ? id
            : throw new FormatException($"--{name} must be a node id (a positive number), got '{_values[name]}'");

    /// <summary>A confirmation: absent (false) or exactly "yes" (true); anything else is a usage error, not a quiet no.</summary>
    public bool GetYes(string name) =>
        !_values.TryGetValue(name, out var text) ? false
            : text == "yes" ? true
            : throw new FormatException($"--{name} takes yes, got '{text}'");

    /// <summary>The nodes' gRPC URLs: --endpoints, else the dev cluster's.</summary>
    public string[] Endpoints
    {
        get
        {
            var text = Get("endpoints", string.Join(",", Enumerable.Range(0, 3).Select(i => $"http://127.0.0.1:{DevCluster.DefaultBasePort + i}")));
            var endpoints = text.Split(',', StringSplitOptions.TrimEntries);
            if (endpoints.All(e => e.Length == 0))
            {
                throw new FormatException("--endpoints lists no endpoint");
            }

            // "a,,b" is most often a list built from a variable that was empty: say so rather than act on what is left.
            if (endpoints.Any(e => e.Length == 0))
            {
                throw new FormatException($"--endpoints '{text}' has an empty entry (two commas in a row, or one at an end)");
            }

            // "localhost:7001" is a URI of scheme "localhost": the gRPC channel would throw at it, not refuse it.
            foreach (var endpoint in endpoints)
            {
                if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
                {
                    throw new FormatException($"--endpoints: '{endpoint}' is not an http:// URL");
                }

                if (!Protocol.ClusterMembers.NamesPort(endpoint))
                {
                    throw new FormatException($"--endpoints: '{endpoint}' names no port (a node's GrpcUrl port, as in http://{uri.Host}:7001)");
                }
            }

            return endpoints;
        }
    }

    public string ClusterId => Get("cluster-id", DevCluster.ClusterId);

    public string Secret => Get("secret", DevCluster.Secret);
}
