using System.Globalization;
using Dcache.TestSupport.Simulation;
using Xunit.Abstractions;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>
/// Liveness: after dense faults (crashes, 20% loss, long partitions, leaders cut off) everything heals at once; within
/// <see cref="SimulationOptions.LivenessBoundTicks"/> ticks a leader must exist that every voter follows, and then every
/// pending proposal must resolve and every replica converge. The bound is asserted in every run (the simulator fails
/// the run when it is exceeded); this test also asserts it over the measured times.
/// </summary>
[Collection(SimulationCollection.Name)]
public sealed class SimulationLivenessTests(ITestOutputHelper output)
{
    public const int Seeds = 500;

    [Fact]
    public void LeaderWithinBoundAfterHealingAndEverythingCommits()
    {
        var runs = Enumerable.Range(1, Seeds).Select(seed => (seed, SimulationScenarios.SweepNodes(seed))).ToList();
        var report = SimulationScenarios.Run(SimulationScenarios.Liveness, runs);
        var bound = SimulationScenarios.Options(SimulationScenarios.Liveness, 1, 3).LivenessBoundTicks;
        var ticks = report.Results.Select(r => r.Stats.TicksToLeaderAfterHeal).Where(t => t >= 0).Order().ToList();
        output.WriteLine(report.Summary());
        if (ticks.Count > 0)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"ticks from heal to a followed leader: median {ticks[ticks.Count / 2]}, p99 {ticks[ticks.Count * 99 / 100]}, max {ticks[^1]}, bound {bound}"));
        }

        Assert.True(report.Failures.Count == 0, report.Failures.Count == 0 ? "" : report.Summary() + Environment.NewLine + report.DescribeFailure());
        Assert.Equal(Seeds, ticks.Count);
        Assert.All(ticks, t => Assert.InRange(t, 0, bound));
        Assert.True(report.Totals.Crashes > Seeds && report.Totals.Partitions > Seeds, "the liveness profile must be fault-dense");
    }
}
