using System.Globalization;

namespace Dcache.Chaos;

/// <summary>What the clients run during a schedule.</summary>
internal enum ChaosWorkload
{
    /// <summary>Registers, counters, expiring and write-once keys, checked per key for linearizability (<see cref="ChaosClient"/>).</summary>
    Registers,

    /// <summary>Transfers between accounts in WATCH/MULTI/EXEC transactions, checked for a constant total (<see cref="BankClient"/>).</summary>
    Bank,
}

/// <summary>What a chaos run does; the command line (Program.cs) and the tests fill it in.</summary>
internal sealed class ChaosOptions
{
    public static readonly IReadOnlyList<FaultKind> AllFaults = Enum.GetValues<FaultKind>();

    /// <summary>
    /// What a run injects unless told otherwise: every kind but the stalls (<see cref="FaultKind.Stall"/>,
    /// <see cref="FaultKind.GatewayStall"/>), which hold for up to 16 s and are asked for by name, so that the seeds
    /// recorded with the default list replay as they ran.
    /// </summary>
    public static readonly IReadOnlyList<FaultKind> DefaultFaults = AllFaults.Except([FaultKind.Stall, FaultKind.GatewayStall]).ToList();

    /// <summary>Seed of the first schedule; schedule i uses seed <c>Seed + i</c>.</summary>
    public int Seed { get; set; } = Random.Shared.Next(1, int.MaxValue / 2);

    public int Schedules { get; set; } = 1;

    /// <summary>Cluster size; null lets each schedule's seed choose 3 (three times in four) or 5.</summary>
    public int? Nodes { get; set; }

    public IReadOnlyList<FaultKind> Faults { get; set; } = DefaultFaults;

    public int FaultsPerSchedule { get; set; } = 2;

    /// <summary>The clients' workload. Not drawn from the seed: a seed makes the same fault schedule under either.</summary>
    public ChaosWorkload Workload { get; set; } = ChaosWorkload.Registers;

    /// <summary>
    /// Steps may start a second fault while the first holds (<see cref="FaultSchedule.CanOverlap"/>). Off by default:
    /// a seed without it makes the schedule it made before overlaps existed.
    /// </summary>
    public bool Overlap { get; set; }

    /// <summary>
    /// Every process reaches each node at one address, as in a deployment (ProxyMesh's oneAddressPerNode). Off by default:
    /// the gateway then also learns the node-to-node proxies' addresses, one breaker per address, so a gateway cut off from
    /// the leader seldom gets as far as having a follower forward its writes.
    /// </summary>
    public bool OneAddressPerNode { get; set; }

    /// <summary>Concurrent clients through the gateway (each key sees at most this many at once).</summary>
    public int Clients { get; set; } = 6;

    /// <summary>Load before the first fault and after the last heal.</summary>
    public TimeSpan SteadyLoad { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Where the gateway sends reads: true for the leader (ReadRouting=Leader), false for round the members; null lets
    /// each schedule's seed choose, so a long run covers both.
    /// </summary>
    public bool? ReadsAtLeader { get; set; }

    /// <summary>Starts the nodes with NodeOptions.TestOnlyUnsafeReads: the planted bug the suite must catch.</summary>
    public bool UnsafeReads { get; set; }

    /// <summary>Wall-clock budget of the linearizability search per key; past it the key's verdict is unknown.</summary>
    public TimeSpan CheckBudgetPerKey { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Where a failing schedule saves its seed, history, logs and data directories.</summary>
    public string ArtifactsRoot { get; set; } = Path.Combine(Path.GetTempPath(), "dcache-chaos");

    /// <summary>Stop at the first failing schedule.</summary>
    public bool StopOnFailure { get; set; }

    /// <summary>The command line that runs one schedule again with the same options.</summary>
    public string ReplayCommand(int scheduleSeed)
    {
        var args = new List<string> { "dotnet run --project tests/Chaos -c Release --", "--seed", scheduleSeed.ToString(CultureInfo.InvariantCulture), "--schedules 1" };
        if (Workload != ChaosWorkload.Registers)
        {
            args.Add("--workload " + Workload.ToString().ToLowerInvariant());
        }

        if (Nodes is { } nodes)
        {
            args.Add($"--nodes {nodes}");
        }

        if (!Faults.SequenceEqual(DefaultFaults))
        {
            args.Add("--faults " + string.Join(",", Faults).ToLowerInvariant());
        }

        if (FaultsPerSchedule != 2)
        {
            args.Add($"--faults-per-schedule {FaultsPerSchedule}");
        }

        if (Overlap)
        {
            args.Add("--overlap");
        }

        if (OneAddressPerNode)
        {
            args.Add("--one-address");
        }

        if (Clients != 6)
        {
            args.Add($"--clients {Clients}");
        }

        if (ReadsAtLeader is { } atLeader)
        {
            args.Add(atLeader ? "--read-routing leader" : "--read-routing members");
        }

        if (UnsafeReads)
        {
            args.Add("--unsafe-reads");
        }

        return string.Join(' ', args);
    }
}
