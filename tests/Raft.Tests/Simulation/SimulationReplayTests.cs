using Dcache.TestSupport.Simulation;
using Xunit.Abstractions;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>
/// Replays one run named by DCACHE_SIM_SEED / DCACHE_SIM_NODES / DCACHE_SIM_PROFILE (the command a failing seed prints);
/// DCACHE_SIM_TRACE=path also writes every event to that file. Unset, it runs a few fixed seeds so it is never empty.
/// </summary>
public sealed class SimulationReplayTests(ITestOutputHelper output)
{
    [Fact]
    public void SimulationReplay()
    {
        var fromEnvironment = SimulationScenarios.FromEnvironment();
        var runs = fromEnvironment is { } one
            ? [one]
            : new[] { 1, 2, 3, 4 }.Select(seed => (SimulationScenarios.Sweep, seed, SimulationScenarios.SweepNodes(seed))).ToList();

        var failures = new List<string>();
        foreach (var (profile, seed, nodes) in runs)
        {
            var tracePath = Environment.GetEnvironmentVariable(SimulationScenarios.TraceVariable);
            using var trace = fromEnvironment is not null && !string.IsNullOrWhiteSpace(tracePath) ? new StreamWriter(tracePath) : null;
            var result = ClusterSimulator.Run(SimulationScenarios.Options(profile, seed, nodes, trace));
            output.WriteLine($"profile {profile} seed {seed} nodes {nodes}: {(result.Passed ? "passed" : "FAILED")}; {result.Stats}");
            if (trace is not null)
            {
                output.WriteLine($"full trace written to {tracePath}");
            }

            if (result.Failure is { } failure)
            {
                var text = $"seed {seed} ({nodes} nodes, profile {profile}) failed: {failure}{Environment.NewLine}" +
                           $"replay: {SimulationScenarios.ReplayCommand(profile, seed, nodes)}";
                output.WriteLine(text);
                failures.Add(text);
            }
        }

        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }
}
