namespace Dcache.Ctl;

/// <summary>Dispatches `dcachectl COMMAND [options]`. Exit codes: 0 success, 1 failure, 2 usage error.</summary>
internal static class CommandLine
{
    private const string Usage = """
        usage: dcachectl COMMAND [options]

        commands:
          dev      start a local cluster (3 nodes and a gateway on 127.0.0.1:6379, data under ./data) until Ctrl-C
                   options: --nodes N (default 3)  --data DIR (default ./data)  --base-port P (default 7001)
                            --gateway-port P (default 6379)
          status   show every node's role, term, commit and applied index
                   options: --endpoints URL[,URL...] (default the dev cluster's)  --cluster-id ID  --secret S
        """;

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            Console.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }

        Options options;
        try
        {
            options = Options.Parse(args.AsSpan(1));
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"dcachectl: {ex.Message}");
            return 2;
        }

        switch (args[0])
        {
            case "dev":
                return await DevCluster.RunAsync(options).ConfigureAwait(false);
            case "status":
                return await StatusCommand.RunAsync(options).ConfigureAwait(false);
            default:
                Console.Error.WriteLine($"dcachectl: unknown command '{args[0]}'");
                Console.Error.WriteLine(Usage);
                return 2;
        }
    }
}

/// <summary>--name value options, with defaults that match `dcachectl dev`.</summary>
internal sealed class Options
{
    private readonly Dictionary<string, string> _values = [];

    public static Options Parse(ReadOnlySpan<string> args)
    {
        var options = new Options();
        for (var i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
            {
                throw new FormatException($"expected --name value, got '{args[i]}'");
            }

            options._values[args[i][2..]] = args[++i];
        }

        return options;
    }

    public string Get(string name, string fallback) => _values.GetValueOrDefault(name, fallback);

    public int GetInt(string name, int fallback) =>
        _values.TryGetValue(name, out var text)
            ? int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var value) ? value : throw new FormatException($"--{name} must be a number")
            : fallback;

    public string ClusterId => Get("cluster-id", DevCluster.ClusterId);

    public string Secret => Get("secret", DevCluster.Secret);
}
