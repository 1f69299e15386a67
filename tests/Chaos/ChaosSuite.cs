using System.Globalization;
using Xunit.Abstractions;

namespace Dcache.Chaos;

/// <summary>Runs a number of schedules (seeds Seed, Seed+1, ...) and sums up their results.</summary>
internal static class ChaosSuite
{
    public static async Task<IReadOnlyList<ScheduleResult>> RunAsync(ChaosOptions options, ITestOutputHelper log)
    {
        log.WriteLine($"chaos: {options.Schedules} schedule(s) from seed {options.Seed}; workload {options.Workload.ToString().ToLowerInvariant()}; faults {string.Join(",", options.Faults)}{(options.Overlap ? "; overlapping" : "")}{(options.UnsafeReads ? "; TEST-ONLY UNSAFE READS ON" : "")}");
        var results = new List<ScheduleResult>();
        for (var i = 0; i < options.Schedules; i++)
        {
            var schedule = FaultSchedule.Generate(options.Seed + i, options);
            var result = await ChaosRun.RunAsync(schedule, options, log);
            results.Add(result);
            log.WriteLine($"[{i + 1}/{options.Schedules}] {result}");
            if (result.Verdict == ScheduleVerdict.Failed && options.StopOnFailure)
            {
                break;
            }
        }

        log.WriteLine(Summary(results));
        return results;
    }

    /// <summary>Per fault kind: schedules that included it, and how many of those passed (the robustness matrix).</summary>
    public static string Summary(IReadOnlyList<ScheduleResult> results)
    {
        var lines = new List<string>
        {
            string.Create(CultureInfo.InvariantCulture,
                $"summary: {results.Count} schedules, {results.Count(r => r.Verdict == ScheduleVerdict.Passed)} passed, {results.Count(r => r.Verdict == ScheduleVerdict.Inconclusive)} inconclusive, {results.Count(r => r.Verdict == ScheduleVerdict.Failed)} failed; {results.Sum(r => r.Operations)} operations, {results.Sum(r => r.Unknown)} unknown; {results.Sum(r => r.SessionExpiredRetries)} session_expired retries, {results.Sum(r => r.SessionExpiredUnknown)} unknown for an expired session"),
        };
        if (results.Any(r => r.Bank is not null))
        {
            lines.Add(string.Create(CultureInfo.InvariantCulture,
                $"  bank: {results.Sum(r => r.Bank?.Acknowledged ?? 0)} transfers acknowledged, {results.Sum(r => r.Bank?.Unknown ?? 0)} unknown, {results.Sum(r => r.Bank?.Aborted ?? 0)} aborted by WATCH, {results.Sum(r => r.Bank?.FormatGated ?? 0)} refused by the log format gate; {results.Sum(r => r.Bank?.ReadsChecked ?? 0)} reads of every account checked"));
        }

        foreach (var kind in ChaosOptions.AllFaults)
        {
            var with = results.Where(r => r.Schedule.AllSteps.Any(s => s.Kind == kind)).ToList();
            if (with.Count > 0)
            {
                lines.Add(string.Create(CultureInfo.InvariantCulture, $"  {kind,-16} in {with.Count,4} schedules, {with.Count(r => r.Verdict == ScheduleVerdict.Passed),4} passed"));
            }
        }

        var pairs = results.SelectMany(r => r.Schedule.Steps.Where(s => s.With is not null).Select(s => s.With!.AfterLeaderKill
            ? $"{s.Kind}(leader removing itself{s.SelfRemovalCut switch { SelfRemovalCut.All => ", cut off", SelfRemovalCut.AllButOne => ", reaching one survivor", _ => "" }})+{s.With.Step.Kind}{(s.With.AimsAtJoiner ? "(joiner)" : "")}"
            : $"{s.Kind}+{s.With.Step.Kind}")).ToList();
        if (pairs.Count > 0)
        {
            lines.Add(string.Create(CultureInfo.InvariantCulture, $"  overlapping steps: {pairs.Count} ({string.Join(", ", pairs.GroupBy(p => p).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Key} {g.Count()}"))})"));
        }

        foreach (var failed in results.Where(r => r.Verdict != ScheduleVerdict.Passed))
        {
            lines.Add($"  {failed.Verdict} seed {failed.Schedule.Seed}: {failed.ArtifactsDirectory}");
        }

        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>Test output for the command: lines to the console.</summary>
internal sealed class ConsoleOutput(bool verbose) : ITestOutputHelper
{
    private bool _skipNext;

    public void WriteLine(string message)
    {
        // LocalCluster writes a "===== process" header and that process's last lines when it is disposed: only
        // wanted when verbose (a failing schedule saves every process's output anyway).
        var skip = !verbose && (_skipNext || message.StartsWith("=====", StringComparison.Ordinal));
        _skipNext = !verbose && message.StartsWith("=====", StringComparison.Ordinal);
        if (!skip)
        {
            Console.WriteLine(message);
        }
    }

    public void WriteLine(string format, params object[] args) => WriteLine(string.Format(CultureInfo.InvariantCulture, format, args));
}
