using System.Globalization;
using Dcache.Cache;
using Xunit.Abstractions;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// A replica restored from a snapshot behaves exactly like one that applied every entry: a seeded stream of every
/// command kind (transactions with reads between their writes too; all format versions, registered and unregistered sessions with retries, stale and marked writes,
/// session expiry, clocks that jump back, malformed entries, membership changes skipped) runs under a memory cap small
/// enough that nearly every write evicts, against one replica that also serves reads of every kind (GET, TTL, KEYS and
/// SCAN, some taken in slices between writes, snapshot captures begun and abandoned), one that serves none, and
/// replicas rebuilt from snapshots taken at random points in every way the node takes them: one call, sliced with
/// writes between the slices, loaded into a fresh machine or swapped into one that has state and long reads of its
/// own. Each rebuilt replica replays the log from its snapshot's index. Every entry's reply, the replicated statistics
/// and the digest must agree after every entry, and reads at the same instant must agree every few entries (not SCAN's
/// pages: where a page ends may depend on the removed keys each replica's own index still holds; its guarantee is
/// ScanTests').
/// </summary>
public sealed class RestoredReplicaTests(ITestOutputHelper output)
{
    private const string SeedVariable = "DCACHE_CACHE_SEED";

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    [InlineData(14)]
    public void Fixed_seeds_restored_replicas_never_diverge(int seed) => Run(seed);

    [Fact]
    public void A_fresh_seed_restored_replicas_never_diverge()
    {
        var seed = Environment.GetEnvironmentVariable(SeedVariable) is { } text ? int.Parse(text, CultureInfo.InvariantCulture) : Random.Shared.Next();
        Run(seed);
    }

    private void Run(int seed)
    {
        output.WriteLine($"seed {seed} (replay: {SeedVariable}={seed} dotnet test --filter FullyQualifiedName~RestoredReplicaTests)");
        var random = new Random(seed);
        var options = new CacheStateMachineOptions { MemoryCapBytes = 6_000, SessionTimeout = TimeSpan.FromSeconds(2) };
        var workload = new Workload(random);
        var log = new List<byte[]?>(); // null: a membership change, which the cache skips
        var replies = new List<CacheReply>();
        var reader = new Replica("reader", new CacheStateMachine(options));
        var plain = new Replica("plain", new CacheStateMachine(options));
        var restored = new List<Replica>();
        var inFlight = new List<(SnapshotCapture Capture, bool SwapIntoExisting)>();
        var longReads = new List<KeysRead>();
        var scans = new List<(ScanTicket Ticket, ulong Cursor)>();
        var restores = 0;
        const int entryCount = 4_000;

        for (var step = 0; step < entryCount; step++)
        {
            var entry = workload.Next();
            log.Add(entry);
            var index = (ulong)log.Count;
            var reply = reader.Apply(index, entry);
            replies.Add(reply);
            foreach (var replica in restored.Prepend(plain))
            {
                var other = replica.Apply(index, entry);
                Assert.True(reply == other, $"seed {seed}: at index {index} {replica.Name} replied {other}, the reader {reply}");
            }

            var digest = reader.Machine.Digest();
            foreach (var replica in restored.Prepend(plain))
            {
                Assert.True(digest == replica.Machine.Digest(), $"seed {seed}: {replica.Name} diverged at index {index}");
                Assert.Equal(Replicated(reader.Machine), Replicated(replica.Machine));
            }

            Assert.True(reader.Machine.UsedBytes <= options.MemoryCapBytes, $"seed {seed}: over the cap at {index}");

            // Reads on the reader only: they must not change anything replicated.
            Read(random, reader.Machine, workload, longReads, scans);

            // Snapshot captures in slices, with writes (the next entries) between the slices.
            for (var i = inFlight.Count - 1; i >= 0; i--)
            {
                var (capture, swap) = inFlight[i];
                if (random.Next(40) == 0)
                {
                    capture.Abandon();
                    inFlight.RemoveAt(i);
                }
                else if (capture.Step(1 + random.Next(6)))
                {
                    inFlight.RemoveAt(i);
                    Restore(Bytes(capture.Result()), swap);
                }
            }

            switch (random.Next(60))
            {
                case 0:
                    Restore(Bytes(reader.Machine.CaptureSnapshot()), swapIntoExisting: random.Next(2) == 0);
                    break;
                case 1:
                    {
                        using var stream = new MemoryStream();
                        plain.Machine.WriteSnapshot(stream);
                        Restore(stream.ToArray(), swapIntoExisting: random.Next(2) == 0);
                        break;
                    }

                case 2 or 3:
                    inFlight.Add((reader.Machine.BeginSnapshotCapture(), random.Next(2) == 0));
                    break;
            }

            if (step % 25 == 0)
            {
                CompareReads(seed, workload, reader, restored.Prepend(plain));
            }
        }

        Assert.True(restores >= 10, $"seed {seed}: only {restores} replicas were restored");
        var tally = replies.GroupBy(Category).OrderBy(group => group.Key, StringComparer.Ordinal).ToDictionary(group => group.Key, group => group.Count());
        output.WriteLine(string.Join(", ", tally.Select(pair => pair.Key + " " + pair.Value.ToString(CultureInfo.InvariantCulture))));
        foreach (var wanted in new[] { CacheErrors.SessionExpired, CacheErrors.StaleSessionSequence, CacheErrors.OutOfMemory, CacheErrors.NotAFloat, CacheErrors.NoSuchKey, "bulk", "integer", "array" })
        {
            Assert.True(tally.GetValueOrDefault(wanted) > 0, $"seed {seed}: no reply of kind {wanted}");
        }

        var stats = reader.Machine.GetStatistics();
        output.WriteLine($"restored {restores} replicas; keys {stats.Keys}, evicted {stats.EvictedKeys}, expired {stats.ExpiredKeys}, malformed {stats.MalformedEntries}, sessions {stats.Sessions}");
        Assert.True(stats.EvictedKeys > 100, $"seed {seed}: only {stats.EvictedKeys} evictions");

        // Rebuilds a replica from a snapshot and replays the log after it, checking every reply it gives on the way.
        void Restore(byte[] snapshot, bool swapIntoExisting)
        {
            restores++;
            CacheStateMachine machine;
            if (swapIntoExisting && restored.Count > 0)
            {
                // A lagging replica installs the snapshot (LoadSnapshot, or FromSnapshot then ReplaceState), with long
                // reads of its own in progress.
                var target = restored[random.Next(restored.Count)];
                restored.Remove(target);
                machine = target.Machine;
                var pendingKeys = machine.BeginKeys(workload.NowMs);
                pendingKeys.Step(1);
                var pendingCapture = machine.BeginSnapshotCapture();
                if (random.Next(2) == 0)
                {
                    machine.Scan(0, 3, workload.NowMs);
                }
                else
                {
                    machine.TryScan(machine.PrepareScan(), 0, 2, workload.NowMs, null, out _); // an index build left half done
                }

                // A write of its own, which the long reads in progress must be told of.
                machine.Apply(machine.AppliedIndex + 1, Entries.Delete(new CommandEnvelope(CommandEnvelope.NoSession, 0, workload.NowMs), "k1", "k2"));
                if (random.Next(2) == 0)
                {
                    machine.LoadSnapshot(new MemoryStream(snapshot));
                }
                else
                {
                    machine.ReplaceState(CacheStateMachine.FromSnapshot(new MemoryStream(snapshot), options));
                }

                while (!pendingKeys.Step(5))
                {
                }

                while (!pendingCapture.Step(5))
                {
                }
            }
            else
            {
                machine = CacheStateMachine.FromSnapshot(new MemoryStream(snapshot), options);
            }

            var replica = new Replica("restored #" + restores.ToString(CultureInfo.InvariantCulture) + " (from index " + machine.AppliedIndex.ToString(CultureInfo.InvariantCulture) + ")", machine);
            for (var at = (int)machine.AppliedIndex; at < log.Count; at++)
            {
                var caughtUp = replica.Apply((ulong)at + 1, log[at]);
                Assert.True(caughtUp == replies[at], $"seed {seed}: {replica.Name} replied {caughtUp} at index {at + 1} while catching up, the reader {replies[at]}");
            }

            Assert.True(reader.Machine.Digest() == machine.Digest(), $"seed {seed}: {replica.Name} differs once caught up");
            restored.Add(replica);
            if (restored.Count > 3)
            {
                restored.RemoveAt(0);
            }
        }
    }

    private static string Category(CacheReply reply) => reply.Kind switch
    {
        CacheReplyKind.Error when reply.ErrorMessage.StartsWith(CacheErrors.MalformedEntryPrefix, StringComparison.Ordinal) => "malformed",
        CacheReplyKind.Error => reply.ErrorMessage,
        CacheReplyKind.Bulk => "bulk",
        CacheReplyKind.Integer => "integer",
        _ => reply.Kind.ToString().ToLowerInvariant(),
    };

    private static (ulong, long, int, long, long, int) Replicated(CacheStateMachine machine)
    {
        var stats = machine.GetStatistics();
        return (stats.AppliedIndex, stats.ClockMs, machine.StoredKeyCount, stats.KeysWithExpiry, stats.UsedBytes, stats.Sessions);
    }

    private static void CompareReads(int seed, Workload workload, Replica reader, IEnumerable<Replica> others)
    {
        foreach (var now in new[] { workload.NowMs - 1_000, workload.NowMs, workload.NowMs + 700 })
        {
            var keys = reader.Machine.Keys(now);
            var count = reader.Machine.CountKeys(now);
            foreach (var replica in others)
            {
                Assert.True(keys == replica.Machine.Keys(now), $"seed {seed}: KEYS differs on {replica.Name} at {reader.Machine.AppliedIndex}");
                Assert.Equal(count, replica.Machine.CountKeys(now));
                foreach (var key in workload.KeySpace)
                {
                    Assert.Equal(reader.Machine.Get(key, now), replica.Machine.Get(key, now));
                    Assert.Equal(reader.Machine.TimeToLiveMs(key, now), replica.Machine.TimeToLiveMs(key, now));
                }
            }
        }
    }

    /// <summary>A read of some kind on the reader: plain reads, KEYS and SCAN whole or in slices left open across writes, a capture abandoned.</summary>
    private static void Read(Random random, CacheStateMachine machine, Workload workload, List<KeysRead> longReads, List<(ScanTicket Ticket, ulong Cursor)> scans)
    {
        var now = workload.NowMs + random.Next(-3_000, 3_000);
        var key = workload.KeySpace[random.Next(workload.KeySpace.Length)];
        switch (random.Next(10))
        {
            case 0:
                machine.Get(key, now);
                machine.TryGet(key, now, out _);
                machine.ContainsKey(key, now);
                var randomKey = machine.RandomKey(now, random);
                Assert.True(
                    randomKey.Kind == CacheReplyKind.Bulk ? machine.ContainsKey(randomKey.Bulk.Span, now) : machine.CountKeys(now) == 0,
                    $"RANDOMKEY answered {randomKey} at {now}");
                break;
            case 1:
                machine.TimeToLiveMs(key, now);
                machine.ExpireTimeMs(key, now);
                machine.StringLength(key, now);
                machine.GetRange(key, 0, -1, now);
                machine.CountKeys(now);
                break;
            case 2:
                machine.Keys(now);
                break;
            case 3:
                longReads.Add(machine.BeginKeys(now));
                break;
            case 4:
                scans.Add((machine.PrepareScan(), (ulong)random.NextInt64()));
                break;
            case 5:
                machine.Scan(random.Next(4) == 0 ? 0 : (ulong)random.NextInt64(), 1 + random.Next(10), now);
                break;
            case 6:
                var capture = machine.BeginSnapshotCapture();
                capture.Step(1 + random.Next(3));
                capture.Abandon();
                break;
        }

        for (var i = longReads.Count - 1; i >= 0; i--)
        {
            if (longReads[i].Step(1 + random.Next(4)))
            {
                longReads[i].ToReply(null);
                longReads.RemoveAt(i);
            }
        }

        for (var i = scans.Count - 1; i >= 0; i--)
        {
            if (machine.TryScan(scans[i].Ticket, scans[i].Cursor, 1 + random.Next(5), now, null, out _))
            {
                scans.RemoveAt(i);
            }
            else
            {
                machine.ScanWork(1 + random.Next(5));
            }
        }
    }

    private static byte[] Bytes(CacheSnapshot snapshot)
    {
        using var stream = new MemoryStream();
        snapshot.WriteTo(stream);
        return stream.ToArray();
    }

    private sealed class Replica(string name, CacheStateMachine machine)
    {
        public string Name { get; } = name;

        public CacheStateMachine Machine { get; } = machine;

        public CacheReply Apply(ulong index, byte[]? entry)
        {
            if (entry is null)
            {
                Machine.SkipEntry(index);
                return CacheReply.Ok;
            }

            return Machine.Apply(index, entry);
        }
    }

    /// <summary>The seeded entry stream: every kind, every format version, sessions that come and go.</summary>
    private sealed class Workload(Random random)
    {
        private static readonly string[] FloatIncrements = ["1.5", "-0.1", "0.1", "3e2", "-2.5E-3", "1e30", "-1e30", "12345678901234567890.5", "1e-30", "inf", "nope", "0", "+7", "1.7976931348623157e308"];
        private readonly Dictionary<ulong, Client> _clients = [];
        private int _entries;

        public byte[][] KeySpace { get; } = Enumerable.Range(0, 60).Select(i => Entries.B("k" + i.ToString(CultureInfo.InvariantCulture))).ToArray();

        public long NowMs { get; private set; } = 1_700_000_000_000;

        public byte[]? Next()
        {
            _entries++;
            NowMs += random.Next(0, 25);
            if (random.Next(200) == 0)
            {
                NowMs -= random.Next(0, 4_000); // a new leader whose clock is behind
            }

            if (_entries % 700 == 0)
            {
                NowMs += 2_500; // an idle spell: sessions expire
            }

            switch (random.Next(200))
            {
                case 0:
                    return null;
                case 1:
                    return [];
                case 2:
                    return Command(NoSession())[..^1];
                case < 8:
                    return Entries.PurgeExpired(NoSession(), NowMs - random.Next(-500, 1_500));
                case < 12:
                    // Stops inside a millisecond that many keys may share (see Expiry).
                    return Entries.PurgeExpiredThroughKey(NoSession(), SharedMillisecond(NowMs - random.Next(-500, 1_500)), Key());
            }

            if (random.Next(4) == 0)
            {
                return Versioned(Command(NoSession()));
            }

            var id = 1 + (ulong)random.Next(12) + ((ulong)(_entries / 900) * 100);
            if (!_clients.TryGetValue(id, out var client))
            {
                client = new Client(registered: random.Next(2) == 0);
                _clients[id] = client;
                if (client.Registered)
                {
                    return Entries.RegisterSession(id, NowMs);
                }
            }

            switch (random.Next(12))
            {
                case 0 when client.Last is not null:
                    return client.Last; // a retry, byte for byte
                case 1 when client.Sequence > 0:
                    // A retry re-proposed later, marked: its session must exist.
                    return Command(new CommandEnvelope(id, client.Sequence, NowMs, SessionMustExist: true));
                case 2 when client.Sequence > 1:
                    return Command(new CommandEnvelope(id, client.Sequence - 1, NowMs, client.Registered)); // stale
                case 3:
                    return Entries.RegisterSession(id, NowMs);
            }

            client.Sequence += (ulong)random.Next(1, 3);
            var entry = Command(new CommandEnvelope(id, client.Sequence, NowMs, client.Registered));
            if (!client.Registered)
            {
                entry = Versioned(entry);
            }

            client.Last = entry;
            return entry;
        }

        private CommandEnvelope NoSession() => new(CommandEnvelope.NoSession, 0, NowMs);

        /// <summary>Now and then an older format version, where the kind exists in it.</summary>
        private byte[] Versioned(byte[] entry)
        {
            if (random.Next(6) == 0 && CacheCommand.MinimumFormatVersion((CacheCommandKind)(entry[1] & 0x7F)) == 1)
            {
                CacheCommand.SetFormatVersion(entry, (byte)(1 + random.Next(CacheCommand.FormatVersion - 1)));
            }

            return entry;
        }

        private byte[] Command(CommandEnvelope envelope, bool inTransaction = false)
        {
            var key = Key();
            var other = Key();
            return random.Next(inTransaction ? 97 : 102) switch
            {
                < 25 => Entries.Encode(w => CacheCommand.EncodeSet(w, envelope, key, Value(), RandomSetOptions())),
                < 31 => Entries.Encode(w => CacheCommand.EncodeDelete(w, envelope, [key, other])),
                < 39 => Entries.Encode(w => CacheCommand.EncodeExpire(w, envelope, key, Expiry(), RandomExpireCondition())),
                < 42 => Entries.Encode(w => CacheCommand.EncodePersist(w, envelope, key)),
                < 50 => Entries.Encode(w => CacheCommand.EncodeIncrementBy(w, envelope, key, random.Next(10) == 0 ? long.MaxValue - random.Next(3) : random.Next(-100, 100))),
                < 56 => Entries.Encode(w => CacheCommand.EncodeMultiSet(w, envelope, Pairs(), ifNoneExist: random.Next(2) == 0)),
                < 60 => Entries.Encode(w => CacheCommand.EncodeGetDelete(w, envelope, key)),
                < 66 => Entries.Encode(w => CacheCommand.EncodeGetExpire(w, envelope, key, random.Next(3) == 0 ? GetExpiry.Persist : GetExpiry.At, Expiry())),
                < 73 => Entries.Encode(w => CacheCommand.EncodeAppend(w, envelope, key, Value())),
                < 81 => Entries.Encode(w => CacheCommand.EncodeIncrementByFloat(w, envelope, key, Entries.B(FloatIncrements[random.Next(FloatIncrements.Length)]))),
                < 90 => Entries.Encode(w => CacheCommand.EncodeRename(w, envelope, key, random.Next(8) == 0 ? key : other, ifAbsent: random.Next(2) == 0)),
                < 91 when random.Next(4) == 0 => Entries.Encode(w => CacheCommand.EncodeFlushAll(w, envelope)),
                < 94 => Entries.Encode(w => CacheCommand.EncodeSetRange(w, envelope, key, SetRangeOffset(), random.Next(6) == 0 ? [] : Value())),
                < 97 => Entries.Encode(w => CacheCommand.EncodeCopy(w, envelope, key, random.Next(8) == 0 ? key : other, replace: random.Next(2) == 0)),
                < 100 => Transaction(envelope),
                _ => Entries.Encode(w => CacheCommand.EncodeSet(w, envelope, key, Value(), default)),
            };
        }

        /// <summary>MULTI/EXEC: writes of every kind with reads of every kind between them, under the cap.</summary>
        private byte[] Transaction(CommandEnvelope envelope)
        {
            var commands = Enumerable.Range(0, random.Next(1, 5))
                .Select(_ => (ReadOnlyMemory<byte>)(random.Next(3) == 0 ? TransactionRead() : Command(new CommandEnvelope(CommandEnvelope.NoSession, 0, NowMs), inTransaction: true)))
                .ToArray();
            return Entries.Encode(w => CacheCommand.EncodeTransaction(w, envelope, commands));
        }

        private byte[] TransactionRead()
        {
            var kind = (ReadKind)random.Next(1, (int)ReadKind.KeyCount + 1);
            ReadOnlyMemory<byte>[] keys = kind switch
            {
                ReadKind.KeyCount => [],
                ReadKind.MultiGet or ReadKind.Exists => [Key(), Key(), Key()],
                _ => [Key()],
            };
            return Entries.Encode(w => CacheCommand.EncodeRead(w, Entries.NoSession, kind, keys, random.Next(-5, 5), random.Next(-5, 500)));
        }

        private byte[] Key() => KeySpace[random.Next(KeySpace.Length)];

        /// <summary>Mostly inside or just past a value; now and then past the cap, or past the 512 MiB limit.</summary>
        private long SetRangeOffset() => random.Next(10) switch
        {
            0 => 6_000 + random.Next(100),
            1 => 536_870_912 - random.Next(3),
            _ => random.Next(0, 500),
        };

        private byte[] Value() => random.Next(8) switch
        {
            0 => Entries.B(random.Next(-50, 50).ToString(CultureInfo.InvariantCulture)),
            1 => Entries.B((random.NextDouble() * 100).ToString("R", CultureInfo.InvariantCulture)),
            2 => new byte[5_900 + random.Next(200)], // about the cap: evicts everything, or is refused
            _ => new byte[random.Next(0, 400)],
        };

        private ReadOnlyMemory<byte>[] Pairs() =>
            Enumerable.Range(0, 2 * random.Next(1, 4)).Select(i => (ReadOnlyMemory<byte>)(i % 2 == 0 ? Key() : Value())).ToArray();

        // Half the expiry times fall on a few shared milliseconds, so that purges stop among keys of equal expiry.
        private long Expiry() => random.Next(2) == 0 ? SharedMillisecond(NowMs + random.Next(-300, 3_000)) : NowMs + random.Next(-300, 3_000);

        private static long SharedMillisecond(long ms) => ms / 1_000 * 1_000;

        private SetOptions RandomSetOptions() => new((SetCondition)random.Next(3), random.Next(3) == 0, (SetExpiry)random.Next(3), Expiry());

        private ExpireCondition RandomExpireCondition()
        {
            ExpireCondition[] valid =
            [
                ExpireCondition.Always, ExpireCondition.IfNoTtl, ExpireCondition.IfHasTtl, ExpireCondition.IfGreater, ExpireCondition.IfLess,
                ExpireCondition.IfHasTtl | ExpireCondition.IfGreater, ExpireCondition.IfHasTtl | ExpireCondition.IfLess,
            ];
            return valid[random.Next(valid.Length)];
        }

        private sealed class Client(bool registered)
        {
            public bool Registered { get; } = registered;

            public ulong Sequence { get; set; }

            public byte[]? Last { get; set; }
        }
    }
}
