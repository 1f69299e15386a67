using System.Globalization;

namespace Dcache.Chaos;

/// <summary>
/// The chaos suite as a command, for long runs and replays:
/// <code>dotnet run --project tests/Chaos -c Release -- --schedules 200 --seed 1234</code>
/// Options: --seed S, --schedules N, --nodes 3|5, --faults kill,pause,partition,isolateleader,asymmetric,slowdisk,
/// memberreplace,gatewaykill,gatewaypause,clockjump,gatewaypartition,diskfull,memberupdate (default: all; diskfull needs root, to mount),
/// --workload registers|bank (default registers), --faults-per-schedule K, --overlap (a step may start a second fault while the first holds), --one-address (each node at one address, as deployed: a gateway cut off from the leader writes through a follower), --clients C, --read-routing leader|members (default: each schedule's seed chooses),
/// --unsafe-reads (the planted bug), --stop-on-failure, --artifacts DIR, --verbose.
/// Exit code 0 when every schedule passed, 1 when one failed, 2 when none failed but some were inconclusive.
/// </summary>
internal static class Program
{
    public static async Task<int> Main(string[] args)
    {
        ChaosOptions options;
        bool verbose;
        try
        {
            (options, verbose) = Parse(args);
        }
        catch (FormatException ex)
        {
            await Console.Error.WriteLineAsync($"chaos: {ex.Message}");
            return 64;
        }

        var results = await ChaosSuite.RunAsync(options, new ConsoleOutput(verbose));
        return results.Any(r => r.Verdict == ScheduleVerdict.Failed) ? 1
            : results.Any(r => r.Verdict == ScheduleVerdict.Inconclusive) ? 2
            : 0;
    }

    private static bool ParseReadRouting(string value) => value switch
    {
        "leader" => true,
        "members" => false,
        _ => throw new FormatException($"--read-routing takes leader or members, not '{value}'"),
    };

    private static ChaosWorkload ParseWorkload(string value) => value switch
    {
        "registers" => ChaosWorkload.Registers,
        "bank" => ChaosWorkload.Bank,
        _ => throw new FormatException($"--workload takes registers or bank, not '{value}'"),
    };

    private static (ChaosOptions Options, bool Verbose) Parse(string[] args)
    {
        var options = new ChaosOptions();
        var verbose = false;
        for (var i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new FormatException($"{args[i]} needs a value");
            int Number(int min, int max)
            {
                var name = args[i];
                var text = Value();
                return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= min && n <= max
                    ? n
                    : throw new FormatException($"{name} takes a number from {min} to {max}, not '{text}'");
            }

            switch (args[i])
            {
                case "--seed": options.Seed = Number(0, int.MaxValue / 2); break;
                case "--schedules": options.Schedules = Number(1, 100_000); break;
                case "--nodes": options.Nodes = Number(3, 5) is var n && n is 3 or 5 ? n : throw new FormatException("--nodes takes 3 or 5"); break;
                case "--faults-per-schedule": options.FaultsPerSchedule = Number(1, 20); break;
                case "--overlap": options.Overlap = true; break;
                case "--one-address": options.OneAddressPerNode = true; break;
                case "--clients": options.Clients = Number(1, 64); break;
                case "--faults": options.Faults = ParseFaults(Value()); break;
                case "--read-routing": options.ReadsAtLeader = ParseReadRouting(Value()); break;
                case "--workload": options.Workload = ParseWorkload(Value()); break;
                case "--unsafe-reads": options.UnsafeReads = true; break;
                case "--stop-on-failure": options.StopOnFailure = true; break;
                case "--artifacts": options.ArtifactsRoot = Value(); break;
                case "--verbose": verbose = true; break;
                default: throw new FormatException($"unknown option '{args[i]}' (see tests/Chaos/Program.cs)");
            }
        }

        return (options, verbose);
    }

    internal static List<FaultKind> ParseFaults(string text) =>
        text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(name => Enum.TryParse<FaultKind>(name, ignoreCase: true, out var kind)
                ? kind
                : throw new FormatException($"unknown fault '{name}'; known: {string.Join(", ", ChaosOptions.AllFaults).ToLowerInvariant()}"))
            .Distinct()
            .ToList();
}
