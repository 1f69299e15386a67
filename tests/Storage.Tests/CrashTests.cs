using System.Globalization;
using Dcache.Raft;
using Xunit.Abstractions;
using Writer = Dcache.Storage.CrashWriter.Program;

namespace Dcache.Storage.Tests;

/// <summary>
/// Kills a writer process with SIGKILL at random moments and checks, after every kill, that reopening the log
/// finds exactly the state after every operation the writer reported done, plus possibly a prefix of the
/// operation it was in (entries, then the commit index; term and vote first). The supersede rule is exercised
/// by the writer's follower-style overwrites and checked by comparing the whole log with a model. The commit
/// index is held to a range (IRaftStorage.Save): at least the one as of the last save that synced the log (entries
/// or a snapshot, which also bring every commit record written before them; or a commit of a membership change,
/// synced at once), at most the newest written, so a commit index saved alone may be lost but nothing else.
/// Seeds: set DCACHE_STORAGE_SEED to replay a run's operation sequence (kill moments are timing, not seeded).
/// </summary>
public abstract class CrashTestBase(ITestOutputHelper output)
{
    protected void RunKillCycles(LogFileOptions log, int kills, string mix)
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_STORAGE_SEED") is { } fixedSeed
            ? int.Parse(fixedSeed, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay with DCACHE_STORAGE_SEED={seed}); pages 2^{log.PageSizeBits}, segments 2^{log.SegmentSizeBits}, mix {mix}");
        var random = new Random(seed);
        using var directory = new TempDirectory("dcache-crash");
        var options = new StorageOptions { DataDirectory = directory.Path, RaftLog = log };
        var model = new LogModel();
        var stats = new KillStats();
        for (var run = 0; run < kills; run++)
        {
            IReadOnlyList<string> lines;
            // Every other run loses its unsynced commit hints, as a power cut could: recovery must then find the
            // end of the log by reading intact, chained records past the last synced hint.
            var writeHints = run % 2 == 0;
            using (var writer = new CrashWriterProcess(directory.Path, seed + run, log, mix, writeHints))
            {
                Assert.True(writer.WaitFor(w => w.Ready, TimeSpan.FromSeconds(60)), $"seed {seed} run {run}: the writer did not start: {writer.Errors}");
                var killAfter = random.Next(0, 300);
                var progressed = writer.WaitFor(w => w.Acknowledged >= killAfter, TimeSpan.FromSeconds(20));
                Assert.True(progressed || !writer.HasExited, $"seed {seed} run {run}: the writer died on its own: {writer.Errors}");
                lines = writer.Kill();
            }

            model = Verify(options, model, lines, $"seed {seed} run {run}", stats);
        }

        output.WriteLine($"{kills} kills, {stats.Acknowledged} operations acknowledged, in-flight operation found (in full or part) after {stats.InFlightFound} kills; final log [{model.FirstIndex}, {model.LastIndex}] commit {model.Commit} term {model.Term}");
        output.WriteLine($"commit index saved alone: {stats.CommitOnly} acknowledged, {stats.MembershipCommits} of them committing a membership change; "
            + $"{stats.KillsAwaitingMembershipSync} kills came after such a one and before the next sync; {stats.KillsLosingCommit} kills lost a commit index saved lazily");
    }

    /// <summary>What the kills of a run exercised, printed so that a run shows it tested the lazy commit index.</summary>
    private sealed class KillStats
    {
        public long Acknowledged { get; set; }

        public int InFlightFound { get; set; }

        public long CommitOnly { get; set; }

        public long MembershipCommits { get; set; }

        public int KillsAwaitingMembershipSync { get; set; }

        public int KillsLosingCommit { get; set; }
    }

    /// <summary>Applies the acknowledged operations to the model and matches the reopened storage against the states the in-flight one may have left.</summary>
    private static LogModel Verify(StorageOptions options, LogModel model, IReadOnlyList<string> lines, string context, KillStats stats)
    {
        var intents = new List<string[]>();
        var done = new HashSet<string>();
        foreach (var line in lines.Skip(1))
        {
            var parts = line.Split(' ');
            if (parts[0] == "I")
            {
                intents.Add(parts);
            }
            else if (parts[0] == "D")
            {
                done.Add(parts[1]);
            }
        }

        string[]? inFlight = null;
        foreach (var intent in intents)
        {
            if (done.Contains(intent[1]))
            {
                Assert.True(inFlight is null, $"{context}: operation {intent[1]} acknowledged after an unacknowledged one");
                if (intent[2] == "K")
                {
                    stats.CommitOnly++;
                    stats.MembershipCommits += model.CommitsConfChange(model.Commit, ulong.Parse(intent[3], CultureInfo.InvariantCulture)) ? 1 : 0;
                }

                Apply(model, intent, Acknowledged);
                stats.Acknowledged++;
            }
            else
            {
                inFlight = intent;
            }
        }

        var candidates = new List<LogModel> { model };
        if (inFlight is not null)
        {
            candidates.AddRange(Outcomes(model, inFlight));
        }

        using var storage = FasterRaftStorage.Open(options);
        var differences = new List<string>();
        for (var i = candidates.Count - 1; i >= 0; i--)
        {
            var difference = candidates[i].Difference(storage, Writer.Payload);
            if (difference is null)
            {
                stats.InFlightFound += i > 0 ? 1 : 0;
                // The acknowledged operations ended with a membership commit not yet followed by a sync, and the
                // in-flight one (if any) left no record that makes it durable anyway.
                var awaitingSync = model.DurableCommit > model.SyncedCommit
                    && (candidates[i].DurableCommit, candidates[i].SyncedCommit) == (model.DurableCommit, model.SyncedCommit);
                stats.KillsAwaitingMembershipSync += awaitingSync ? 1 : 0;
                stats.KillsLosingCommit += storage.HardState.Commit < candidates[i].Commit ? 1 : 0;
                candidates[i].Reopened(storage.HardState.Commit);
                return candidates[i];
            }

            differences.Add($"candidate {i}: {difference}");
        }

        Assert.Fail($"{context}: reopened log matches no state the writer may have left (in flight: {(inFlight is null ? "none" : string.Join(' ', inFlight))}):\n{string.Join('\n', differences)}");
        return model;
    }

    /// <summary>An operation that returned: all its records are written (a commit index alone is durable only later, unless it commits a membership change).</summary>
    private const int Acknowledged = int.MaxValue;

    /// <summary>Every state a kill during <paramref name="intent"/> may leave, in write order (the full operation last).</summary>
    private static IEnumerable<LogModel> Outcomes(LogModel model, string[] intent)
    {
        var steps = intent[2] == "A" ? int.Parse(intent[4], CultureInfo.InvariantCulture) + 1 : intent[2] == "S" ? 2 : 1;
        for (var step = 1; step <= steps; step++)
        {
            var copy = model.Copy();
            Apply(copy, intent, step);
            yield return copy;
        }
    }

    /// <summary>
    /// Applies an operation of which the first <paramref name="records"/> steps reached the disk (a kill in flight),
    /// or all of it, returned (<see cref="Acknowledged"/>). The log is written in order, so a record found on disk
    /// brings every record written before it: any lazily written commit index too.
    /// </summary>
    private static void Apply(LogModel model, string[] intent, int records)
    {
        ulong N(int i) => ulong.Parse(intent[i], CultureInfo.InvariantCulture);
        switch (intent[2])
        {
            case "H":
                (model.Term, model.Vote) = (N(3), N(4));
                break;
            case "A":
                var (start, count, term, commit) = (N(3), (int)N(4), N(5), N(6));
                var written = Math.Min(count, records);
                model.Append(start, Enumerable.Range(0, written).Select(i => (term, (start + (ulong)i) % 17 == 0 ? EntryType.ConfChange : EntryType.Normal)));
                if (written > 0)
                {
                    model.Synced();
                }

                if (records > count)
                {
                    model.Commit = commit;
                    model.Synced();
                }

                break;
            case "K":
                var newCommit = N(3);
                // Acknowledged, it is durable only if it commits a membership change; found on disk, it is the commit.
                var durable = records != Acknowledged || model.CommitsConfChange(model.Commit, newCommit);
                model.Commit = newCommit;
                if (durable)
                {
                    model.DurableCommit = newCommit;
                }

                break;
            case "C":
                // Compaction may make a lazily written commit index durable (the replay base records it, and moving
                // the log's head commits the log): the commit stays within its range either way.
                model.CreateSnapshot(N(3), N(4), N(5));
                break;
            case "S":
                model.Synced();
                model.InstallSnapshot(N(3), N(4));
                if (records >= 2)
                {
                    model.Commit = N(3);
                    model.Synced();
                }

                break;
            default:
                throw new InvalidOperationException($"unknown operation {string.Join(' ', intent)}");
        }
    }
}

// Kills per run since session 22 (25, 20 and 10 before): each kill starts a new writer process, and the suite has a
// 15-minute budget on a 2-core machine. Every run draws new kill points (its seed is printed), so runs add up.

public sealed class CrashTestsSmallPages(ITestOutputHelper output) : CrashTestBase(output)
{
    [Fact]
    public void Every_reported_durable_entry_survives_SIGKILL_with_small_pages_and_segments() =>
        RunKillCycles(new LogFileOptions { PageSizeBits = 10, MemorySizeBits = 12, SegmentSizeBits = 13 }, kills: 16, mix: "log");
}

public sealed class CrashTestsDefaultPages(ITestOutputHelper output) : CrashTestBase(output)
{
    [Fact]
    public void Every_reported_durable_entry_survives_SIGKILL_with_default_pages_and_segments() =>
        RunKillCycles(new LogFileOptions(), kills: 12, mix: "log");
}

public sealed class CrashTestsHardState(ITestOutputHelper output) : CrashTestBase(output)
{
    [Fact]
    public void Every_reported_durable_term_and_vote_survives_SIGKILL() =>
        RunKillCycles(new LogFileOptions { PageSizeBits = 12, MemorySizeBits = 14, SegmentSizeBits = 16 }, kills: 8, mix: "hardstate");
}
