using System.Diagnostics;
using System.Globalization;
using Dcache.TestSupport.Simulation;
using Xunit.Abstractions;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>
/// Proof that the harness can fail: each test plants one safety bug in every node (a test-only switch in the core)
/// and requires the simulation to report a safety failure (an invariant or the linearizability checker) within the
/// seed budget. The protocol-level checks (one vote per term, durable quorum at commit) are off in these runs, so the
/// catch comes from the five Raft invariants or the client history. The catching seed's control run (same seed, bug
/// off) must show no safety failure.
/// </summary>
[Collection(SimulationCollection.Name)]
public sealed class SimulationMutationTests(ITestOutputHelper output)
{
    [Fact]
    public void MutationVoteTwiceInTermIsCaught() => AssertCaught(SimulationScenarios.VoteTwiceInTerm);

    [Fact]
    public void MutationCommitPreviousTermByCountingIsCaught() => AssertCaught(SimulationScenarios.CommitPreviousTermByCounting);

    [Fact]
    public void MutationAckBeforePersistIsCaught() => AssertCaught(SimulationScenarios.AckBeforePersist);

    [Fact]
    public void MutationReadIndexWithoutQuorumIsCaught() => AssertCaught(SimulationScenarios.ReadIndexWithoutQuorum);

    [Fact]
    public void MutationAppendsAheadOfDurableCommitIsCaught() => AssertCaught(SimulationScenarios.AppendsAheadOfDurableCommit);

    private void AssertCaught(string profile)
    {
        var clock = Stopwatch.StartNew();
        var budget = SimulationScenarios.MutationSeedBudget(profile);
        var report = SimulationScenarios.RunUntilFailure(
            profile, firstSeed: 1, budget, seed => SimulationScenarios.MutationNodes(profile, seed), SimulationScenarios.IsSafetyFailure);
        clock.Stop();
        var caught = report.Failures.Where(f => SimulationScenarios.IsSafetyFailure(f.Failure)).ToList();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{report.Summary()} in {clock.Elapsed.TotalSeconds:0.0} s"));
        Assert.True(caught.Count > 0, $"the planted bug '{profile}' went unnoticed in {report.Results.Count} seeds: {report.Summary()}");

        var (seed, nodes, failure) = caught[0];
        output.WriteLine($"caught by seed {seed} ({nodes} nodes): {failure.Kind}: {failure.Message}");
        output.WriteLine($"replay: {SimulationScenarios.ReplayCommand(profile, seed, nodes)}");
        output.WriteLine($"caught by {caught.Count} of {report.Results.Count} seeds run: {string.Join(" ", caught.Select(c => $"{c.Seed}:{c.Failure.Kind}"))}");

        var control = ClusterSimulator.Run(SimulationScenarios.Control(SimulationScenarios.Options(profile, seed, nodes)));
        output.WriteLine($"control run (bug off): {(control.Failure is null ? "passed" : control.Failure.Kind + ": " + control.Failure.Message)}");
        Assert.False(control.Failure is { } f && SimulationScenarios.IsSafetyFailure(f),
            $"seed {seed} fails even without the planted bug, so it proves nothing about the mutation: {control.Failure}");
    }
}
