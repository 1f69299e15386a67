using System.Globalization;
using Dcache.Cache;
using Xunit.Abstractions;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// Replicas of one random log of writes, transactions and watched transactions, the first part in format 7 (a build
/// without revisions), must answer every entry alike and reach the same digest (revisions, removal table, floors),
/// whatever snapshot each started from: one applies it all, the others load a snapshot of the first taken at random points
/// (at once or a slice at a time while writes apply, in format 1 before the revision floor and format 2 after), then apply
/// the rest. A failing run prints its seed; DCACHE_WATCH_REPLICA_SEED replays it.
/// </summary>
public sealed class WatchReplicaTests(ITestOutputHelper output)
{
    private const int Runs = 20;
    private const int EntriesPerRun = 1_500;
    private static readonly CommandEnvelope Alone = Entries.NoSession;

    [Fact]
    public void Replicas_started_from_snapshots_at_random_points_answer_every_entry_alike_and_reach_the_same_digest()
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_WATCH_REPLICA_SEED") is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay with DCACHE_WATCH_REPLICA_SEED={seed})");
        var (applied, aborted, snapshots) = (0, 0, 0);
        for (var run = 0; run < Runs; run++)
        {
            var random = new Random(seed + run);
            var options = new CacheStateMachineOptions { MemoryCapBytes = random.Next(2) == 0 ? 0 : 400_000 };
            var log = new List<byte[]>();
            var first = new CacheStateMachine(options);
            var replicas = new List<CacheStateMachine> { first };
            var captures = new List<SnapshotCapture>();
            var upgradeAt = random.Next(EntriesPerRun / 2);
            var watches = new List<WatchedKey>();
            var sessions = new Dictionary<ulong, (ulong Sequence, byte[] Last)>();
            long now = 1_000_000;
            for (var i = 0; i < EntriesPerRun; i++)
            {
                now += random.Next(-50, 200);
                if (random.Next(30) == 0 && first.Watch(Entries.Keys("k0"), now).Kind == CacheReplyKind.Array)
                {
                    var keys = Enumerable.Range(0, random.Next(1, 4)).Select(_ => Key(random)).ToArray();
                    var read = first.Watch(Entries.Keys(keys), now + random.Next(-100, 100));
                    watches.AddRange(keys.Select((key, j) => new WatchedKey(Entries.B(key), (ulong)read.Items[0].Integer, read.Items[j + 1].Integer == 1)));
                    watches.RemoveRange(0, Math.Max(0, watches.Count - 4)); // recent reads, so that some transactions apply

                }

                var entry = NextEntry(random, now, watches, sessions);
                if (i < upgradeAt && entry[1] != (byte)CacheCommandKind.WatchedTransaction)
                {
                    CacheCommand.SetFormatVersion(entry, CacheCommand.TransactionVersion);
                }

                log.Add(entry);
                var index = (ulong)log.Count;
                var expected = first.Apply(index, entry);
                for (var r = 1; r < replicas.Count; r++)
                {
                    var reply = replicas[r].Apply(index, entry);
                    Assert.True(expected.Equals(reply), $"seed {seed + run}: replica {r} answered entry {index} {reply}, the first {expected}");
                }

                // Captures taken a slice at a time go on between writes, as the node's loop runs them.
                foreach (var capture in captures.ToList())
                {
                    if (capture.Step(random.Next(1, 50)))
                    {
                        captures.Remove(capture);
                        replicas.Add(Load(capture.Result(), log, options));
                        snapshots++;
                    }
                }

                applied += expected.Kind == CacheReplyKind.Array && entry[1] == (byte)CacheCommandKind.WatchedTransaction ? 1 : 0;
                aborted += expected.Kind == CacheReplyKind.Nil && entry[1] == (byte)CacheCommandKind.WatchedTransaction ? 1 : 0;
                if (random.Next(150) == 0)
                {
                    // A snapshot of one replica (any: they must all be alike), at once or a slice at a time.
                    var source = replicas[random.Next(replicas.Count)];
                    if (random.Next(2) == 0)
                    {
                        replicas.Add(Load(source.CaptureSnapshot(), log, options));
                        snapshots++;
                    }
                    else
                    {
                        captures.Add(source.BeginSnapshotCapture());
                    }
                }
            }

            captures.ForEach(capture => capture.Abandon());
            var digests = replicas.Select(r => r.Digest()).Distinct().ToList();
            Assert.True(digests.Count == 1, $"seed {seed + run}: {digests.Count} different digests among {replicas.Count} replicas");
            Assert.NotEqual(0UL, first.RevisionFloor);
        }

        output.WriteLine($"{Runs} runs of {EntriesPerRun} entries: {applied} watched transactions applied, {aborted} aborted, {snapshots} replicas started from snapshots");
        Assert.True(applied > 0 && aborted > 0);
    }

    /// <summary>A replica that loads <paramref name="snapshot"/> and applies the log after it, as a node installing it does.</summary>
    private static CacheStateMachine Load(CacheSnapshot snapshot, List<byte[]> log, CacheStateMachineOptions options)
    {
        using var stream = new MemoryStream();
        snapshot.WriteTo(stream);
        stream.Position = 0;
        var machine = CacheStateMachine.FromSnapshot(stream, options);
        for (var index = snapshot.AppliedIndex + 1; index <= (ulong)log.Count; index++)
        {
            machine.Apply(index, log[(int)index - 1]);
        }

        return machine;
    }

    // Few keys, so that watched keys are written often; now and then many, for FLUSHALL's recorded keys and floor.
    private static string Key(Random random) => "k" + random.Next(random.Next(10) == 0 ? 3_000 : 12).ToString(CultureInfo.InvariantCulture);

    private static byte[] NextEntry(Random random, long now, List<WatchedKey> watches, Dictionary<ulong, (ulong Sequence, byte[] Last)> sessions)
    {
        var clientId = (ulong)random.Next(0, 4);
        if (clientId != 0 && sessions.TryGetValue(clientId, out var last) && random.Next(8) == 0)
        {
            return last.Last; // a retry: applies once, answers as before
        }

        var sequence = clientId == 0 ? 0 : (sessions.TryGetValue(clientId, out var s) ? s.Sequence : 0) + 1;
        var envelope = new CommandEnvelope(clientId, sequence, now);
        var roll = random.Next(100);
        var entry = roll switch
        {
            < 40 => OneCommand(random, envelope, now),
            < 55 => Entries.Transaction(envelope, [.. Enumerable.Range(0, random.Next(1, 4)).Select(_ => OneCommand(random, Alone, now))]),
            < 85 when watches.Count > 0 => Entries.WatchedTransaction(
                envelope,
                [.. Enumerable.Range(0, random.Next(1, 4)).Select(_ => watches[random.Next(watches.Count)])],
                [.. Enumerable.Range(0, random.Next(0, 3)).Select(_ => OneCommand(random, Alone, now))]),
            < 86 => Entries.FlushAll(envelope),
            < 88 => Entries.MultiSet(envelope, [.. Enumerable.Range(0, 1_500).SelectMany(j => new[] { "m" + j.ToString(CultureInfo.InvariantCulture), "v" })]),
            < 92 => Entries.PurgeExpired(new CommandEnvelope(CommandEnvelope.NoSession, 0, now), now),
            _ => OneCommand(random, envelope, now),
        };

        if (clientId != 0)
        {
            sessions[clientId] = (sequence, entry);
        }

        return entry;
    }

    private static byte[] OneCommand(Random random, CommandEnvelope envelope, long now)
    {
        var key = Key(random);
        return random.Next(14) switch
        {
            0 => Entries.Set(envelope, key, "v" + random.Next(3).ToString(CultureInfo.InvariantCulture)),
            1 => Entries.Set(envelope, key, "x", SetOptions.ExpiringAt(now + random.Next(-100, 1_000))),
            2 => Entries.Set(envelope, key, "n", new SetOptions(Condition: SetCondition.IfAbsent)),
            3 => Entries.Delete(envelope, key, Key(random)),
            4 => Entries.Expire(envelope, key, now + random.Next(-100, 1_000)),
            5 => Entries.Persist(envelope, key),
            6 => Entries.IncrementBy(envelope, key, random.Next(-2, 3)),
            7 => Entries.GetDelete(envelope, key),
            8 => Entries.Rename(envelope, key, Key(random)),
            9 => Entries.Copy(envelope, key, Key(random), replace: random.Next(2) == 0),
            10 => Entries.Append(envelope, key, random.Next(2) == 0 ? string.Empty : "a"),
            11 => Entries.SetRange(envelope, key, random.Next(3), random.Next(2) == 0 ? string.Empty : "z"),
            12 => Entries.Read(ReadKind.Get, key),
            _ => Entries.GetExpire(envelope, key, GetExpiry.Persist),
        };
    }
}
