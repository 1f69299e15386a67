using System.Globalization;
using Dcache.Raft;
using Dcache.Storage;

namespace Dcache.Storage.CrashWriter;

/// <summary>
/// Writes to a FASTER Raft log like a Raft node would (appends, follower-style overwrites of an uncommitted
/// suffix, term/vote changes, commit index moves alone, local snapshots, installed snapshots) until it is killed.
/// Before each operation it prints the intent ("I ..."), after the operation returned it prints "D seq". The crash
/// test kills it with SIGKILL and checks that the reopened log is the state after every "D" operation, plus possibly
/// a prefix of the one in flight; except that a commit index saved alone is durable only once a later save syncs
/// the log, or at once if it commits a membership change (every 17th entry is one: see IRaftStorage.Save).
/// Usage: dotnet Dcache.Storage.CrashWriter.dll dataDir seed pageBits memoryBits segmentBits mix [nohints]
/// (mix: "log" for mostly appends, "hardstate" for mostly term/vote changes; "nohints": skip the unsynced commit
/// hints, as a power cut would lose them, so recovery must find the end of the log by reading past the hint).
/// </summary>
public static class Program
{
    public static readonly Membership Members = Membership.Of([1UL, 2UL, 3UL]);

    /// <summary>The payload of entry (index, term): recomputable by the test, so content is checked too.</summary>
    public static byte[] Payload(ulong index, ulong term)
    {
        var data = new byte[(int)((index * 7 + term * 13) % 200)];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(index + term * 31 + (ulong)i);
        }

        return data;
    }

    public static int Main(string[] args)
    {
        var options = new StorageOptions
        {
            DataDirectory = args[0],
            RaftLog = new LogFileOptions
            {
                PageSizeBits = int.Parse(args[2], CultureInfo.InvariantCulture),
                MemorySizeBits = int.Parse(args[3], CultureInfo.InvariantCulture),
                SegmentSizeBits = int.Parse(args[4], CultureInfo.InvariantCulture),
            },
            WriteCommitHints = !(args.Length > 6 && args[6] == "nohints"),
        };
        var random = new Random(int.Parse(args[1], CultureInfo.InvariantCulture));
        var hardStateMix = args.Length > 5 && args[5] == "hardstate";
        var output = Console.Out;
        using var storage = FasterRaftStorage.Open(options);
        var hs = storage.HardState;
        output.WriteLine($"READY {storage.FirstIndex} {storage.LastIndex} {hs.Term} {hs.Vote} {hs.Commit}");
        output.Flush();
        var term = Math.Max(hs.Term, 1);
        var vote = hs.Vote;
        var commit = hs.Commit;
        for (long seq = 1; ; seq++)
        {
            var roll = random.Next(100);
            var idleAfterCommit = false;
            if (hardStateMix ? roll < 70 : roll < 8)
            {
                // An election: a new term, a vote in it (or none).
                term += (ulong)random.Next(1, 3);
                vote = (ulong)random.Next(0, 4);
                output.WriteLine(Invariant($"I {seq} H {term} {vote}"));
                output.Flush();
                storage.Save(new HardState(term, vote, commit), [], null);
            }
            else if (!hardStateMix && roll < 30 && storage.LastIndex > commit)
            {
                // The commit index alone moves, as on a follower's heartbeat or a leader's acknowledgement round:
                // mostly by a step or three (written lazily unless it reaches a membership change), else anywhere
                // up to the last entry (often across one).
                var newCommit = random.Next(3) != 0
                    ? Math.Min(commit + (ulong)random.Next(1, 4), storage.LastIndex)
                    : (ulong)random.NextInt64((long)commit + 1, (long)storage.LastIndex + 1);
                output.WriteLine(Invariant($"I {seq} K {newCommit}"));
                output.Flush();
                storage.Save(new HardState(term, vote, newCommit), [], null);

                // Entries from the commit index on are never compacted here, so (commit, newCommit] is in the log.
                var commitsMembershipChange = newCommit / 17 > commit / 17;
                commit = newCommit;
                idleAfterCommit = commitsMembershipChange || random.Next(2) == 0;
            }
            else if (roll < 82 || storage.LastIndex == commit && roll < 90)
            {
                // Append a batch; sometimes overwrite part of the uncommitted suffix like a follower would.
                var last = storage.LastIndex;
                var start = last + 1;
                if (random.Next(4) == 0 && last > commit)
                {
                    start = (ulong)random.NextInt64((long)Math.Max(commit + 1, storage.FirstIndex), (long)last + 2);
                    term++;
                    output.WriteLine(Invariant($"I {seq} H {term} {vote}"));
                    output.Flush();
                    storage.Save(new HardState(term, vote, commit), [], null);
                    output.WriteLine(Invariant($"D {seq}"));
                    seq++;
                }

                var count = random.Next(1, 24);
                var end = start + (ulong)count - 1;
                // Half the time the commit stays (a leader appends before its followers acknowledge; a K moves it later).
                var newCommit = random.Next(2) == 0 ? commit : (ulong)random.NextInt64((long)commit, (long)end + 1);
                var entries = new List<Entry>(count);
                for (var i = start; i <= end; i++)
                {
                    entries.Add(new Entry(i, term, i % 17 == 0 ? EntryType.ConfChange : EntryType.Normal, Payload(i, term)));
                }

                output.WriteLine(Invariant($"I {seq} A {start} {count} {term} {newCommit}"));
                output.Flush();
                storage.Save(new HardState(term, vote, newCommit), entries, null);
                commit = newCommit;
            }
            else if (roll < 95 && commit > storage.Snapshot.Index)
            {
                // A local snapshot of applied (committed) entries, compacting a little below it.
                var index = (ulong)random.NextInt64((long)storage.Snapshot.Index + 1, (long)commit + 1);
                storage.TryGetTerm(index, out var indexTerm);
                var compactTo = index - Math.Min(index - 1, (ulong)random.Next(0, 6));
                compactTo = Math.Max(compactTo, storage.FirstIndex - 1);
                output.WriteLine(Invariant($"I {seq} C {index} {indexTerm} {compactTo}"));
                output.Flush();
                storage.CreateSnapshot(new SnapshotMetadata(index, indexTerm, Members), compactTo);
            }
            else
            {
                // A snapshot from the leader, of a newer term: beyond our log, or inside its uncommitted suffix, which it
                // then drops (the entry at its index is of an older term).
                var firstUncommitted = Math.Max(commit, storage.Snapshot.Index) + 1;
                var index = random.Next(2) == 0 && storage.LastIndex >= firstUncommitted
                    ? (ulong)random.NextInt64((long)firstUncommitted, (long)storage.LastIndex + 1)
                    : storage.LastIndex + (ulong)random.Next(1, 10);
                term++;
                output.WriteLine(Invariant($"I {seq} H {term} {vote}"));
                output.Flush();
                storage.Save(new HardState(term, vote, commit), [], null);
                output.WriteLine(Invariant($"D {seq}"));
                seq++;
                output.WriteLine(Invariant($"I {seq} S {index} {term}"));
                output.Flush();
                storage.Save(new HardState(term, vote, index), [], new SnapshotMetadata(index, term, Members));
                commit = index;
            }

            output.WriteLine(Invariant($"D {seq}"));
            output.Flush();
            if (idleAfterCommit)
            {
                // A node idles after a heartbeat's commit until the next one. Without the pause nearly every kill
                // lands inside a syncing save (they take the time), hardly ever while a commit index waits unsynced
                // or just after a membership commit; always pausing would leave too few kills inside a save.
                Thread.Sleep(random.Next(1, 4));
            }
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
