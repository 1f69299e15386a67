using System.Diagnostics;
using System.Globalization;
using Xunit.Abstractions;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>
/// The CI seed sweep: thousands of seeded runs, 3 and 5 nodes alternating, every fault kind on, membership changes and
/// leadership transfers included, each ending with the liveness bound, convergence and a linearizability check.
/// DCACHE_SIM_SWEEP_SEEDS / _FIRST / _PROFILE / _NODES override the budget for exploration.
/// </summary>
[Collection(SimulationCollection.Name)]
public sealed class SimulationSweepTests(ITestOutputHelper output)
{
    /// <summary>Seeds per CI run (the issue asks for at least 2,000 within five minutes on two cores).</summary>
    public const int CiSeeds = 3000;

    /// <summary>Seeds of the genesis-bootstrap variant per CI run (it differs only in how the initial voters start).</summary>
    public const int CiGenesisSeeds = 1000;

    /// <summary>Seeds of the membership-heavy variant per CI run.</summary>
    public const int CiMembershipSeeds = 1000;

    [Fact]
    public void SeedSweep() => Sweep(SimulationScenarios.Sweep, CiSeeds, 1);

    /// <summary>
    /// The same sweep with the initial voters started from a genesis snapshot at index 1, so that nodes added later
    /// always catch up by snapshot. Different seeds from <see cref="SeedSweep"/>, so the two add up.
    /// </summary>
    [Fact]
    public void SeedSweepGenesis() => Sweep(SimulationScenarios.SweepGenesis, CiGenesisSeeds, 100_001);

    /// <summary>
    /// Membership changes under faults, denser and harsher than in <see cref="SeedSweep"/>: down to one voter and back,
    /// the leader removing itself half the time, leaders failing right after proposing a change, restarts replaying in
    /// small Readys. Different seeds from the other sweeps.
    /// </summary>
    [Fact]
    public void SeedSweepMembership() => Sweep(SimulationScenarios.Membership, CiMembershipSeeds, 200_001);

    private void Sweep(string defaultProfile, int defaultSeeds, int defaultFirst)
    {
        var seeds = EnvironmentInt("DCACHE_SIM_SWEEP_SEEDS") ?? defaultSeeds;
        var first = EnvironmentInt("DCACHE_SIM_SWEEP_FIRST") ?? defaultFirst;
        var profile = Environment.GetEnvironmentVariable("DCACHE_SIM_SWEEP_PROFILE") is { Length: > 0 } p ? p : defaultProfile;
        var fixedNodes = EnvironmentInt("DCACHE_SIM_SWEEP_NODES");
        var runs = Enumerable.Range(first, seeds).Select(seed => (seed, fixedNodes ?? SimulationScenarios.SweepNodes(seed))).ToList();

        var clock = Stopwatch.StartNew();
        var report = SimulationScenarios.Run(profile, runs);
        clock.Stop();

        var totals = report.Totals;
        output.WriteLine(report.Summary());
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{seeds} seeds in {clock.Elapsed.TotalSeconds:0.0} s ({seeds / clock.Elapsed.TotalSeconds:0.0} seeds/s on {Environment.ProcessorCount} cores)"));
        output.WriteLine("totals: " + totals);
        foreach (var group in report.Failures.GroupBy(f => f.Failure.Kind))
        {
            output.WriteLine($"{group.Key}: seeds {string.Join(" ", group.Select(f => f.Seed))}");
        }

        var ticks = report.Results.Select(r => r.Stats.TicksToLeaderAfterHeal).Where(t => t >= 0).Order().ToList();
        if (ticks.Count > 0)
        {
            var slowest = report.Results.MaxBy(r => r.Stats.TicksToLeaderAfterHeal)!;
            output.WriteLine($"ticks from heal to a followed leader: median {ticks[ticks.Count / 2]}, p99 {ticks[ticks.Count * 99 / 100]}, " +
                             $"max {ticks[^1]} (seed {slowest.Seed}; bound {SimulationScenarios.Options(profile, slowest.Seed, 3).LivenessBoundTicks})");
        }

        if (report.Failures.Count > 0)
        {
            output.WriteLine(report.DescribeFailure());
        }

        Assert.True(report.Failures.Count == 0, report.Failures.Count == 0 ? "" : report.Summary() + Environment.NewLine + report.DescribeFailure());

        // The sweep must actually exercise what it claims to.
        Assert.True(totals.Crashes > 0 && totals.Restarts > 0, "no crashes");
        Assert.True(totals.Partitions > 0, "no partitions");
        Assert.True(totals.TransfersRequested > 0, "no leadership transfers");
        Assert.True(totals.ConfChangesApplied > 0 && totals.NodesAdded > 0 && totals.NodesRemoved > 0, "no membership changes");
        Assert.True(totals.SnapshotsTaken > 0 && totals.SnapshotsInstalled > 0, "no snapshots installed");
        Assert.True(totals.ReadsServed > 0 && totals.WritesCommitted > 0, "no client traffic");
    }

    internal static int? EnvironmentInt(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } text ? int.Parse(text, CultureInfo.InvariantCulture) : null;
}

/// <summary>The simulation tests each use every core: run them one after another, not side by side.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SimulationCollection
{
    public const string Name = "Simulation";
}
