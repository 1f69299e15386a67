using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Dcache.TestSupport.Linearizability;
using Dcache.TestSupport.Simulation;
using Xunit.Abstractions;

namespace Dcache.Storage.Tests;

/// <summary>
/// The deterministic Raft simulation with every node's log on <see cref="FasterRaftStorage"/> in a temp directory
/// (through <see cref="FasterSimulatedDisk"/>): the Raft tests' CI sweep profiles (3 and 5 nodes, every fault kind,
/// membership changes, snapshots, the invariants after every event and a linearizability check per run), on fewer
/// seeds, since every Ready is a real synchronous write. Each restart reopens the node's files, and the simulator
/// checks they hold exactly what Save returned from.
///
/// Each run is also run on the in-memory disk and must be the same run, event for event (equal fingerprints): the
/// shared contract suite holds FasterRaftStorage to MemoryStorage's observable behaviour, so any difference the core
/// can see is a storage bug even if no invariant catches it.
///
/// A failing seed prints the one command that reruns it: DCACHE_SIM_SEED (and DCACHE_SIM_NODES) select one run of the
/// test it names, DCACHE_SIM_TRACE=path writes that run's every event to a file. DCACHE_SIM_FASTER_SEEDS and
/// DCACHE_SIM_FASTER_FIRST change the sweep's budget for exploration.
/// </summary>
[Collection(SimulationOnFasterStorageCollection.Name)]
public sealed class SimulationOnFasterStorageTests(ITestOutputHelper output)
{
    // Since session 22 two thirds of what they were (150 and 50): the suite has a 15-minute budget on a 2-core machine,
    // and these seeds are the same in every run (a regression check; DCACHE_SIM_FASTER_SEEDS and _FIRST explore).

    /// <summary>Seeds of the sweep profile per CI run (the in-memory sweep runs 3,000).</summary>
    public const int CiSeeds = 100;

    /// <summary>Seeds of the genesis-snapshot profile per CI run (the in-memory sweep runs 1,000).</summary>
    public const int CiGenesisSeeds = 35;

    private const string SeedVariable = "DCACHE_SIM_SEED";
    private const string NodesVariable = "DCACHE_SIM_NODES";
    private const string TraceVariable = "DCACHE_SIM_TRACE";

    /// <summary>
    /// Small pages and segments (entries here are tens of bytes), so that a run's logs span several segment files and
    /// compaction after snapshots frees whole ones.
    /// </summary>
    private static readonly LogFileOptions RaftLog = new() { PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16 };

    /// <summary>A 1 KiB cache of recent payloads, so that catching up and applying also read entries back from the files.</summary>
    private const long RecentEntryCacheBytes = 1024;


    /// <summary>The Raft tests' "sweep" profile, on the same first seeds as its in-memory sweep.</summary>
    [Fact]
    public void Sweep() => RunSweep(nameof(Sweep), genesis: false, CiSeeds, 1);

    /// <summary>
    /// The Raft tests' "sweep-genesis" profile: the initial voters start from a snapshot at index 1, so a new node's
    /// first Save installs a snapshot into an empty FASTER log and every node added later catches up by snapshot.
    /// </summary>
    [Fact]
    public void SweepGenesis() => RunSweep(nameof(SweepGenesis), genesis: true, CiGenesisSeeds, 100_001);

    private void RunSweep(string testName, bool genesis, int defaultSeeds, int defaultFirst)
    {
        var replay = EnvironmentInt(SeedVariable);
        var seeds = replay is null ? EnvironmentInt("DCACHE_SIM_FASTER_SEEDS") ?? defaultSeeds : 1;
        var first = replay ?? EnvironmentInt("DCACHE_SIM_FASTER_FIRST") ?? defaultFirst;
        var fixedNodes = EnvironmentInt(NodesVariable);
        var runs = Enumerable.Range(first, seeds).Select(seed => (Seed: seed, Nodes: fixedNodes ?? NodesOf(seed))).ToList();
        var tracePath = replay is not null && Environment.GetEnvironmentVariable(TraceVariable) is { Length: > 0 } path ? path : null;

        var outcomes = new RunOutcome[runs.Count];
        var clock = Stopwatch.StartNew();
        using (var parent = new TempDirectory("dcache-sim-faster"))
        {
            RunOnDedicatedThreads(Environment.ProcessorCount, runs.Count, i =>
            {
                outcomes[i] = Run(parent.Path, Options(runs[i].Seed, runs[i].Nodes, genesis), tracePath);
            });

            // Every run deleted its own directory when it ended (FasterSimulatedDisk.Dispose), failed runs included.
            var leftOver = Directory.GetFileSystemEntries(parent.Path);
            Assert.True(leftOver.Length == 0, "runs left files behind: " + string.Join(", ", leftOver));
        }

        clock.Stop();

        var totals = new SimulationStats();
        foreach (var outcome in outcomes)
        {
            totals.Add(outcome.Result.Stats);
        }

        var failures = runs.Zip(outcomes)
            .Select(p => (p.First.Seed, p.First.Nodes, Problem: p.Second.Problem))
            .Where(p => p.Problem is not null)
            .Select(p => $"seed {p.Seed} ({p.Nodes} nodes, {testName}) failed on FASTER storage: {p.Problem}{Environment.NewLine}" +
                         $"replay: {ReplayCommand(testName, p.Seed, p.Nodes)}")
            .ToList();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{runs.Count} seeds from {first} on FASTER storage, {failures.Count} failed, in {clock.Elapsed.TotalSeconds:0.0} s " +
            $"({runs.Count / clock.Elapsed.TotalSeconds:0.0} seeds/s on {Environment.ProcessorCount} cores); {outcomes.Sum(o => o.Reopens)} storage reopens"));
        output.WriteLine("totals: " + totals);
        if (tracePath is not null)
        {
            output.WriteLine($"full trace written to {tracePath}");
        }

        foreach (var failure in failures)
        {
            output.WriteLine(failure);
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {runs.Count} runs failed; the first: {failures.FirstOrDefault()}");

        if (replay is null)
        {
            // The sweep must exercise what it claims to: restarts from the files, membership, snapshots, clients.
            Assert.True(totals.Crashes > 0 && totals.Restarts > 0 && outcomes.Sum(o => o.Reopens) > 0, "no crashes and reopens");
            Assert.True(totals.ConfChangesApplied > 0 && totals.NodesAdded > 0 && totals.NodesRemoved > 0, "no membership changes");
            Assert.True(totals.SnapshotsTaken > 0 && totals.SnapshotsInstalled > 0, "no snapshots installed");
            Assert.True(totals.ReadsServed > 0 && totals.WritesCommitted > 0, "no client traffic");
        }
    }

    /// <summary>
    /// One run on FASTER storage in its own directory under <paramref name="parent"/> (deleted when the run ends, however
    /// it ends), then the same run on the in-memory disk to compare with.
    /// </summary>
    private static RunOutcome Run(string parent, SimulationOptions options, string? tracePath)
    {
        SimulationResult result;
        int reopens;
        using (var trace = tracePath is null ? null : new StreamWriter(tracePath))
        using (var disk = new FasterSimulatedDisk(Path.Combine(parent, $"seed-{options.Seed}"), RaftLog, RecentEntryCacheBytes))
        {
            result = ClusterSimulator.Run(options with { DiskFactory = () => disk, FullTrace = trace });
            reopens = disk.Reopens;
        }

        if (result.Failure is { } failure)
        {
            return new RunOutcome(result, reopens, failure.ToString());
        }

        var inMemory = ClusterSimulator.Run(options);
        var problem = inMemory.Fingerprint == result.Fingerprint
            ? null
            : $"the run differs from the same seed on the in-memory disk (fingerprint {result.Fingerprint:x16} vs {inMemory.Fingerprint:x16}; " +
              $"stats {result.Stats} vs {inMemory.Stats}{(inMemory.Failure is { } memoryFailure ? $"; in memory it failed: {memoryFailure.Kind}" : "")})";
        return new RunOutcome(result, reopens, problem);
    }

    /// <summary>
    /// Runs <paramref name="work"/> for 0..count-1 on dedicated threads, not on the thread pool: FasterLog runs its
    /// commit callbacks as thread-pool work and its Dispose spins until they are done, so with every pool thread busy
    /// running a simulation each simulated crash would stall until the pool injects another thread (measured: 0.9
    /// seeds/s on pool threads, 6 on dedicated ones).
    /// </summary>
    private static void RunOnDedicatedThreads(int threadCount, int count, Action<int> work)
    {
        var next = -1;
        var errors = new ConcurrentQueue<Exception>();
        var threads = Enumerable.Range(0, Math.Min(threadCount, count)).Select(t => new Thread(() =>
        {
            for (var i = Interlocked.Increment(ref next); i < count && errors.IsEmpty; i = Interlocked.Increment(ref next))
            {
                try
                {
                    work(i);
                }
                catch (Exception exception)
                {
                    errors.Enqueue(exception);
                }
            }
        })
        { Name = $"simulation {t}", IsBackground = true }).ToList();
        threads.ForEach(thread => thread.Start());
        threads.ForEach(thread => thread.Join());
        if (!errors.IsEmpty)
        {
            throw new AggregateException(errors);
        }
    }

    /// <summary>The Raft tests' sweep profiles (SimulationScenarios.Options there): the defaults plus these per-seed choices.</summary>
    private static SimulationOptions Options(int seed, int nodes, bool genesis) => new()
    {
        Seed = seed,
        Nodes = nodes,
        HistoryChecker = HistoryChecks.Linearizable,
        // Every fourth seed hands the checker its unknown writes open-ended instead of settled from the log.
        ResolveUnknownWritesFromLog = seed % 4 != 3,
        GenesisSnapshot = genesis,
        // Closing a FASTER handle writes out a commit index saved lazily, so a simulated crash cannot drop it; the
        // in-memory run it is compared with keeps it too. (The in-memory sweeps cover restarts from an older one.)
        LoseUnsyncedCommits = false,
    };

    /// <summary>As in the in-memory sweep, cluster sizes alternate by seed so that a seed alone names a run.</summary>
    private static int NodesOf(int seed) => seed % 2 == 0 ? 5 : 3;

    private static string ReplayCommand(string testName, int seed, int nodes) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{SeedVariable}={seed} {NodesVariable}={nodes} dotnet test tests/Storage.Tests -c Release " +
            $"--filter FullyQualifiedName={typeof(SimulationOnFasterStorageTests).FullName}.{testName}");

    private static int? EnvironmentInt(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text ? int.Parse(text, CultureInfo.InvariantCulture) : null;

    /// <summary>A run's result on FASTER storage, how often it reopened a node's files, and what is wrong with it (null: nothing).</summary>
    private sealed record RunOutcome(SimulationResult Result, int Reopens, string? Problem);
}

/// <summary>The sweeps use every core and the disk: run them alone, not beside the other storage tests.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SimulationOnFasterStorageCollection
{
    public const string Name = "SimulationOnFasterStorage";
}
