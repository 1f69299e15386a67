using System.Collections.Concurrent;
using System.Globalization;
using Dcache.TestSupport.Linearizability;
using Dcache.TestSupport.Simulation;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>
/// The named simulation profiles the tests run, and how a failing run is replayed: every run is identified by
/// (profile, seed, nodes), and <see cref="ReplayCommand"/> prints the one command that reruns exactly it.
/// </summary>
internal static class SimulationScenarios
{
    public const string SeedVariable = "DCACHE_SIM_SEED";
    public const string NodesVariable = "DCACHE_SIM_NODES";
    public const string ProfileVariable = "DCACHE_SIM_PROFILE";
    public const string TraceVariable = "DCACHE_SIM_TRACE";

    /// <summary>The CI sweep: every fault kind, membership changes and transfers, 3 and 5 nodes.</summary>
    public const string Sweep = "sweep";

    /// <summary>Heavier faults right up to the heal, to stress the liveness bound.</summary>
    public const string Liveness = "liveness";

    /// <summary>
    /// The sweep with the initial voters started from a genesis snapshot at index 1 instead of the bootstrap snapshot
    /// at index 0: a workaround for nodes added later that replay the log without knowing the initial membership
    /// (see SimulationOptions.GenesisSnapshot), so that the rest of the core can be swept while that is open.
    /// </summary>
    public const string SweepGenesis = "sweep-genesis";

    /// <summary>
    /// Membership changes under faults, denser than in the sweep: clusters shrink down to one voter and grow again, the
    /// leader removes itself half the time, leaders fail right after proposing a change, and a restart's replay is
    /// split over many Readys (so snapshots are taken in the middle of it).
    /// </summary>
    public const string Membership = "sweep-membership";

    public const string VoteTwiceInTerm = "mutation-vote-twice";
    public const string CommitPreviousTermByCounting = "mutation-commit-previous-term";
    public const string AckBeforePersist = "mutation-ack-before-persist";
    public const string ReadIndexWithoutQuorum = "mutation-read-index-without-quorum";
    public const string AppendsAheadOfDurableCommit = "mutation-appends-ahead-of-durable-commit";

    public static IReadOnlyList<string> Profiles { get; } =
        [Sweep, SweepGenesis, Membership, Liveness, VoteTwiceInTerm, CommitPreviousTermByCounting, AckBeforePersist, ReadIndexWithoutQuorum, AppendsAheadOfDurableCommit];

    /// <summary>Seeds a mutation test may use before declaring the planted bug unnoticed (it stops at the first catch).</summary>
    public static int MutationSeedBudget(string profile) => profile switch
    {
        CommitPreviousTermByCounting => 3000,
        ReadIndexWithoutQuorum => 1500,
        // About one seed in 650 catches it (most crashes miss the few milliseconds of a single voter's write).
        AppendsAheadOfDurableCommit => 4000,
        _ => 1000,
    };

    /// <summary>Cluster size for a mutation profile's seed (figure 8 is tuned on three nodes).</summary>
    public static int MutationNodes(string profile, int seed) => profile == CommitPreviousTermByCounting ? 3 : SweepNodes(seed);

    /// <summary>The sweep alternates cluster sizes by seed so that a seed alone names a run.</summary>
    public static int SweepNodes(int seed) => seed % 2 == 0 ? 5 : 3;

    public static SimulationOptions Options(string profile, int seed, int nodes, TextWriter? fullTrace = null)
    {
        var baseline = new SimulationOptions
        {
            Seed = seed,
            Nodes = nodes,
            HistoryChecker = HistoryChecks.Linearizable,
            FullTrace = fullTrace,
            // Every fourth seed hands the checker its unknown writes open-ended (may take effect any time after the
            // call, or never) instead of settling them from the log, so both kinds of history are checked.
            ResolveUnknownWritesFromLog = seed % 4 != 3,
        };

        return profile switch
        {
            Sweep => baseline,
            SweepGenesis => baseline with { GenesisSnapshot = true },
            Membership => baseline with
            {
                MinMembershipIntervalMs = 40,
                MaxMembershipIntervalMs = 200,
                RemoveLeaderChance = 0.5,
                ShrinkChance = 0.3,
                MinVoters = 1,
                KeepRemovedUntilLastVoterApplied = true,
                FailAfterChangeChance = 0.25,
                MaxCommittedSizePerReady = 200,
                // Two voters split their votes far more often than three or five (each round both campaign within the
                // message delay of each other about a third of the time): allow twice the rounds.
                LivenessBoundTicks = 160,
            },
            // Membership changes stay off here: the sweep covers them (with the same bound asserted in every run),
            // this profile is about elections and catch-up after dense crashes, losses and partitions.
            Liveness => baseline with
            {
                MembershipChanges = false,
                ChaosMs = 2000,
                MinFaultIntervalMs = 20,
                MaxFaultIntervalMs = 120,
                MaxLossRate = 0.2,
                MaxPartitionMs = 1500,
                MaxDowntimeMs = 1500,
                Faults = new FaultWeights(Crash: 4, Partition: 3, IsolateLeader: 3, Asymmetric: 3, Heal: 0, TransferLeadership: 2),
            },
            // Two votes in one term matter when two candidates run at once: isolate leaders and crash nodes often so
            // terms are contested again and again.
            VoteTwiceInTerm => baseline with
            {
                Mutation = SafetyMutation.VoteTwiceInTerm,
                ProtocolChecks = false,
                MembershipChanges = false,
                Faults = new FaultWeights(Crash: 3, Partition: 2, IsolateLeader: 4, Asymmetric: 2, Heal: 1, TransferLeadership: 1),
            },
            // Figure 8: a new leader gets an old-term entry onto a bare majority and (with the bug) commits it, then fails
            // before its own no-op is on a majority; a node with a later-term conflicting entry wins and overwrites it.
            // One entry per Append and one Append in flight open that window for a round trip on every new leader;
            // isolated leaders that keep accepting writes create the conflicting later-term entries; new leaders fail
            // soon after election (churn) and stay down long enough for the other side to elect. Tuned on 3 nodes:
            // about 1 seed in 270 catches it (the budget below allows 3,000).
            CommitPreviousTermByCounting => baseline with
            {
                Mutation = SafetyMutation.CommitPreviousTermByCounting,
                ProtocolChecks = false,
                MembershipChanges = false,
                Clients = 5,
                MaxSizePerMessage = 1,
                MaxInflightMessages = 1,
                MaxCrashedNodes = 1,
                NewLeaderFailureChance = 0.9,
                MaxNewLeaderFailureDelayMs = 60,
                MinFaultIntervalMs = 20,
                MaxFaultIntervalMs = 120,
                MinDowntimeMs = 200,
                MaxDowntimeMs = 600,
                Faults = new FaultWeights(Crash: 2, Partition: 2, IsolateLeader: 10, Asymmetric: 1, Heal: 1, TransferLeadership: 0),
            },
            // An unpersisted acknowledgement only matters when the follower crashes before persisting: crash often,
            // with slow disks so that the window is wide.
            AckBeforePersist => baseline with
            {
                Mutation = SafetyMutation.AckBeforePersist,
                ProtocolChecks = false,
                MembershipChanges = false,
                MaxDiskLatencyMs = 15,
                MinFaultIntervalMs = 10,
                MaxFaultIntervalMs = 60,
                MinDowntimeMs = 5,
                MaxDowntimeMs = 100,
                Faults = new FaultWeights(Crash: 10, Partition: 1, IsolateLeader: 2, Asymmetric: 0, Heal: 1, TransferLeadership: 0),
            },
            // A stale read needs a deposed leader that still believes it leads (CheckQuorum steps it down one to two
            // election timeouts after it is cut off) while the other side has elected a leader and completed a write,
            // and a read of that key served by the old leader in that window: isolate leaders often, one hot key,
            // short client timeouts so writers move to the new leader quickly. About 1 seed in 110 catches it.
            ReadIndexWithoutQuorum => baseline with
            {
                Mutation = SafetyMutation.ReadIndexWithoutQuorum,
                ProtocolChecks = false,
                MembershipChanges = false,
                Clients = 5,
                Keys = 1,
                ReadFraction = 0.5,
                ClientTimeoutMs = 100,
                MinPartitionMs = 150,
                MaxPartitionMs = 600,
                Faults = new FaultWeights(Crash: 0, Partition: 1, IsolateLeader: 8, Asymmetric: 1, Heal: 1, TransferLeadership: 0),
            },
            // An early append is unsafe only from a leader whose term or commit is not durable yet: a single voter
            // (it wins and commits alone) with learners or joining voters to send to, that crashes before its write
            // ends. Few voters, frequent membership changes, crashes and slow disks.
            AppendsAheadOfDurableCommit => baseline with
            {
                Mutation = SafetyMutation.AppendsAheadOfDurableCommit,
                ProtocolChecks = false,
                MinMembershipIntervalMs = 40,
                MaxMembershipIntervalMs = 200,
                ShrinkChance = 0.9,
                MinVoters = 1,
                KeepRemovedUntilLastVoterApplied = true,
                NewLeaderFailureChance = 0.5,
                MaxDiskLatencyMs = 30,
                MinFaultIntervalMs = 10,
                MaxFaultIntervalMs = 60,
                MinDowntimeMs = 5,
                MaxDowntimeMs = 100,
                LivenessBoundTicks = 160,
                Faults = new FaultWeights(Crash: 10, Partition: 1, IsolateLeader: 2, Asymmetric: 0, Heal: 1, TransferLeadership: 0),
            },
            _ => throw new ArgumentException($"unknown simulation profile '{profile}' (known: {string.Join(", ", Profiles)})", nameof(profile)),
        };
    }

    /// <summary>
    /// The same run with the planted bug switched off: a mutation is only "caught" by a seed whose control run has no
    /// safety failure, so the catch is the mutation's doing.
    /// </summary>
    public static SimulationOptions Control(SimulationOptions options) => options with { Mutation = SafetyMutation.None };

    /// <summary>Failures that prove a safety property broken (a liveness failure proves nothing about safety).</summary>
    public static bool IsSafetyFailure(SimulationFailure failure) =>
        failure.Kind is FailureKind.Invariant or FailureKind.NotLinearizable or FailureKind.Convergence;

    public static string ReplayCommand(string profile, int seed, int nodes) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{SeedVariable}={seed} {NodesVariable}={nodes}{(profile == Sweep ? "" : $" {ProfileVariable}={profile}")} dotnet test tests/Raft.Tests -c Release --filter FullyQualifiedName~SimulationReplay");

    /// <summary>Runs the given (seed, nodes) pairs in parallel; results come back ordered by seed.</summary>
    public static SweepReport Run(string profile, IReadOnlyList<(int Seed, int Nodes)> runs)
    {
        var results = new SimulationResult[runs.Count];
        Parallel.For(0, runs.Count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, i =>
        {
            results[i] = ClusterSimulator.Run(Options(profile, runs[i].Seed, runs[i].Nodes));
        });
        return new SweepReport(profile, runs, results);
    }

    /// <summary>
    /// Runs seeds in order, a batch at a time, until one fails or the budget is spent: the reported seed is the lowest
    /// failing one in the first failing batch, so the outcome does not depend on thread scheduling.
    /// </summary>
    public static SweepReport RunUntilFailure(string profile, int firstSeed, int budget, Func<int, int> nodesOf, Func<SimulationFailure, bool>? counts = null)
    {
        counts ??= _ => true;
        var batch = Math.Max(2, Environment.ProcessorCount * 4);
        var allRuns = new List<(int, int)>();
        var allResults = new List<SimulationResult>();
        for (var start = 0; start < budget; start += batch)
        {
            var runs = Enumerable.Range(firstSeed + start, Math.Min(batch, budget - start)).Select(s => (s, nodesOf(s))).ToList();
            var report = Run(profile, runs);
            allRuns.AddRange(runs);
            allResults.AddRange(report.Results);
            if (report.Failures.Any(f => counts(f.Failure)))
            {
                break;
            }
        }

        return new SweepReport(profile, allRuns, allResults);
    }

    /// <summary>Turns the DCACHE_SIM_* variables into one run, or null when unset.</summary>
    public static (string Profile, int Seed, int Nodes)? FromEnvironment()
    {
        var seedText = Environment.GetEnvironmentVariable(SeedVariable);
        if (string.IsNullOrWhiteSpace(seedText))
        {
            return null;
        }

        var seed = int.Parse(seedText, CultureInfo.InvariantCulture);
        var nodesText = Environment.GetEnvironmentVariable(NodesVariable);
        var nodes = string.IsNullOrWhiteSpace(nodesText) ? SweepNodes(seed) : int.Parse(nodesText, CultureInfo.InvariantCulture);
        var profile = Environment.GetEnvironmentVariable(ProfileVariable);
        return (string.IsNullOrWhiteSpace(profile) ? Sweep : profile, seed, nodes);
    }
}

/// <summary>The results of many runs of one profile, with what a test prints about them.</summary>
internal sealed class SweepReport(string profile, IReadOnlyList<(int Seed, int Nodes)> runs, IReadOnlyList<SimulationResult> results)
{
    public string Profile { get; } = profile;

    public IReadOnlyList<SimulationResult> Results { get; } = results;

    public IReadOnlyList<(int Seed, int Nodes, SimulationFailure Failure)> Failures { get; } =
        runs.Zip(results).Where(p => p.Second.Failure is not null).Select(p => (p.First.Seed, p.First.Nodes, p.Second.Failure!)).ToList();

    public SimulationStats Totals
    {
        get
        {
            var totals = new SimulationStats();
            foreach (var result in Results)
            {
                totals.Add(result.Stats);
            }

            return totals;
        }
    }

    public string DescribeFailure(int which = 0)
    {
        var (seed, nodes, failure) = Failures[which];
        return $"seed {seed} ({nodes} nodes, profile {Profile}) failed: {failure}{Environment.NewLine}" +
               $"replay: {SimulationScenarios.ReplayCommand(Profile, seed, nodes)}";
    }

    public string Summary() =>
        $"{Results.Count} runs of '{Profile}', {Failures.Count} failed" +
        (Failures.Count > 0
            ? $" (seeds {string.Join(" ", Failures.Take(20).Select(f => f.Seed))}{(Failures.Count > 20 ? " ..." : "")}; kinds {string.Join(",", Failures.Select(f => f.Failure.Kind).Distinct())})"
            : "");
}
