using Dcache.TestSupport.Simulation;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>One seed, one execution: replaying a seed must reproduce the run exactly, or a printed seed is worthless.</summary>
[Collection(SimulationCollection.Name)]
public sealed class SimulationDeterminismTests
{
    [Theory]
    [InlineData(SimulationScenarios.Sweep, 11, 3)]
    [InlineData(SimulationScenarios.Sweep, 12, 5)]
    [InlineData(SimulationScenarios.SweepGenesis, 13, 5)]
    [InlineData(SimulationScenarios.AckBeforePersist, 14, 3)]
    public void SameSeedSameRun(string profile, int seed, int nodes)
    {
        var first = ClusterSimulator.Run(SimulationScenarios.Options(profile, seed, nodes));
        var second = ClusterSimulator.Run(SimulationScenarios.Options(profile, seed, nodes));

        Assert.Equal(first.Fingerprint, second.Fingerprint);
        Assert.Equal(first.Stats.ToString(), second.Stats.ToString());
        Assert.Equal(first.Failure?.ToString(), second.Failure?.ToString());
        Assert.Equal(first.History, second.History);
    }

    [Fact]
    public void DifferentSeedsDifferentRuns()
    {
        var a = ClusterSimulator.Run(SimulationScenarios.Options(SimulationScenarios.Sweep, 21, 3));
        var b = ClusterSimulator.Run(SimulationScenarios.Options(SimulationScenarios.Sweep, 22, 3));
        Assert.NotEqual(a.Fingerprint, b.Fingerprint);
    }
}
