namespace Dcache.Chaos;

/// <summary>Schedules: the clock jump's choices, and the default fault list.</summary>
public sealed class FaultScheduleTests
{
    [Fact]
    public void AClockJumpOutrunsTheSessionTimeoutAndMostlyAimsAtTheLeader()
    {
        var steps = Enumerable.Range(0, 2000)
            .Select(seed => FaultSchedule.Generate(seed, new ChaosOptions { Faults = [FaultKind.ClockJump], FaultsPerSchedule = 1 }).Steps[0])
            .ToList();

        // The nodes' session timeout is 1 h: every jump must expire every session.
        Assert.All(steps, s => Assert.InRange(s.ClockJumpOffset, TimeSpan.FromMinutes(61), TimeSpan.FromMinutes(180)));
        Assert.InRange(steps.Count(s => s.ClockJumpOnLeader), 1400, 1600);
        Assert.Contains(steps, s => s.ClockJumpOffset == TimeSpan.FromMinutes(180));
    }

    [Fact]
    public void TheDefaultRunHasTheClockJumpAndItsReplayNamesNoFaults()
    {
        var options = new ChaosOptions();

        Assert.Contains(FaultKind.ClockJump, options.Faults);
        Assert.Equal(ChaosOptions.AllFaults, options.Faults);
        Assert.DoesNotContain("--faults", options.ReplayCommand(1), StringComparison.Ordinal);
        options.Faults = [FaultKind.ClockJump, FaultKind.Kill];
        Assert.Contains("--faults clockjump,kill", options.ReplayCommand(1), StringComparison.Ordinal);
    }
}
