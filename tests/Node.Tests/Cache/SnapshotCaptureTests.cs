using Dcache.Cache;
using Xunit.Abstractions;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// A snapshot captured a slice at a time while writes of every kind apply between slices is byte for byte the snapshot
/// taken in one call at the instant it began: checked against a replica that stopped applying at that instant.
/// </summary>
public sealed class SnapshotCaptureTests(ITestOutputHelper output)
{
    [Fact]
    public void A_capture_taken_in_slices_is_the_snapshot_of_the_instant_it_began_whatever_applies_between_slices()
    {
        for (var seed = 1; seed <= 24; seed++)
        {
            output.WriteLine($"seed {seed}");
            var random = new Random(seed);
            var machines = new Replicas(random.Next(2) == 0 ? 0 : 400_000);
            for (var i = 0; i < 2_500; i++)
            {
                machines.ApplyToBoth(RandomWrite(random, machines, mayFlush: false));
            }

            var capture = machines.Live.BeginSnapshotCapture();
            var steps = 0;
            while (!capture.Step(1 + random.Next(40)))
            {
                steps++;
                for (var w = random.Next(15); w > 0; w--)
                {
                    machines.ApplyToLive(RandomWrite(random, machines, mayFlush: true));
                }
            }

            Assert.True(steps > 10, $"seed {seed}: the capture took {steps} steps");
            var expected = machines.Frozen.CaptureSnapshot();
            Assert.Equal(expected.AppliedIndex, capture.AppliedIndex);
            Assert.True(Bytes(expected).AsSpan().SequenceEqual(Bytes(capture.Result())), $"seed {seed}: the sliced capture differs from the frozen replica's snapshot");
            Assert.NotEqual(machines.Frozen.Digest(), machines.Live.Digest());
        }
    }

    [Fact]
    public void A_capture_finishes_over_the_old_state_when_a_snapshot_is_loaded_or_flushall_applies_mid_way()
    {
        foreach (var loadSnapshot in new[] { false, true })
        {
            var cache = new CacheHarness();
            for (var i = 0; i < 200; i++)
            {
                cache.Set("k" + i, "v" + i);
            }

            var expected = Bytes(cache.Machine.CaptureSnapshot());
            var capture = cache.Machine.BeginSnapshotCapture();
            capture.Step(10);
            cache.Set("k150", "rewritten before the replacement");
            if (loadSnapshot)
            {
                var other = new CacheHarness();
                other.Set("from-snapshot", "v");
                using var stream = new MemoryStream();
                other.Machine.WriteSnapshot(stream);
                cache.Machine.LoadSnapshot(new MemoryStream(stream.ToArray()));
            }
            else
            {
                cache.Apply(Entries.FlushAll(cache.Envelope()));
            }

            cache.Set("k160", "written after it");
            while (!capture.Step(7))
            {
            }

            Assert.Equal(expected, Bytes(capture.Result()));
        }
    }

    [Fact]
    public void Writing_a_snapshot_stops_within_a_few_thousand_keys_once_cancelled()
    {
        // An operator's backup given up mid-way: the node stops serialising rather than go through every key for nobody.
        var cache = new CacheHarness();
        for (var i = 0; i < 20_000; i++)
        {
            cache.Set("key-" + i, "value-" + i);
        }

        var snapshot = cache.Machine.CaptureSnapshot();
        var whole = Bytes(snapshot).Length;
        using var cancelled = new CancellationTokenSource();
        var output = new CancellingStream(cancelled);
        Assert.ThrowsAny<OperationCanceledException>(() => snapshot.WriteTo(output, cancelled.Token));
        Assert.True(output.Length < whole / 2, $"{output.Length} of {whole} bytes written after the cancellation");
    }

    /// <summary>Takes what is written, and cancels on the first write.</summary>
    private sealed class CancellingStream(CancellationTokenSource cancel) : MemoryStream
    {
        // A derived MemoryStream's span writes come here too.
        public override void Write(byte[] buffer, int offset, int count)
        {
            cancel.Cancel();
            base.Write(buffer, offset, count);
        }
    }

    [Fact]
    public void An_abandoned_capture_stops_keeping_keys_aside_and_a_capture_is_not_read_before_it_is_done()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        cache.Set("b", "2");
        var capture = cache.Machine.BeginSnapshotCapture();
        Assert.Throws<InvalidOperationException>(() => capture.Result());
        capture.Abandon();
        cache.Set("a", "3");
        var empty = new CacheHarness().Machine.BeginSnapshotCapture();
        Assert.True(empty.Step(1));
        Assert.Equal(0, empty.Result().KeyCount);
    }

    private static byte[] Bytes(CacheSnapshot snapshot)
    {
        using var stream = new MemoryStream();
        snapshot.WriteTo(stream);
        return stream.ToArray();
    }

    /// <summary>
    /// One write of any kind, with or without a session (new, repeated, stale or retried sequences), touching existing
    /// keys, new keys, counters, expiry, or (rarely) every key.
    /// </summary>
    private static byte[] RandomWrite(Random random, Replicas machines, bool mayFlush)
    {
        var envelope = machines.NextEnvelope(random);
        var key = "k" + random.Next(3_000);
        var other = "k" + random.Next(3_000);
        var now = envelope.NowMs;
        return random.Next(19) switch
        {
            0 => Entries.Delete(envelope, key, other),
            1 => Entries.Expire(envelope, key, now + random.Next(-5, 60), random.Next(3) switch { 0 => ExpireCondition.Always, 1 => ExpireCondition.IfHasTtl, _ => ExpireCondition.IfGreater }),
            2 => Entries.Persist(envelope, key),
            3 => Entries.IncrementBy(envelope, random.Next(2) == 0 ? "n" + random.Next(50) : key, random.Next(-3, 4)),
            4 => Entries.Append(envelope, key, "+"),
            5 => Entries.GetExpire(envelope, key, random.Next(2) == 0 ? GetExpiry.Persist : GetExpiry.At, now + random.Next(-5, 60)),
            6 => Entries.GetDelete(envelope, key),
            7 => Entries.Rename(envelope, key, other, ifAbsent: random.Next(2) == 0),
            8 => Entries.MultiSet(envelope, key, "m", other, "m"),
            9 => Entries.MultiSetIfNoneExist(envelope, key, "x", other, "x"),
            10 => Entries.PurgeExpired(envelope, now),
            11 => Entries.Set(envelope, key, "ttl", SetOptions.ExpiringAt(now + random.Next(1, 60))),
            12 => Entries.IncrementByFloat(envelope, random.Next(2) == 0 ? "f" + random.Next(50) : key, "1.5"),
            13 => Entries.Set(envelope, key, "kept", new SetOptions(Condition: random.Next(2) == 0 ? SetCondition.Always : SetCondition.IfPresent, ReturnOldValue: true, Expiry: SetExpiry.KeepTtl)),
            14 => Entries.RegisterSession(1 + (ulong)random.Next(40), now),
            15 when mayFlush && random.Next(300) == 0 => Entries.FlushAll(envelope),
            _ => Entries.Set(envelope, key, new string('v', random.Next(1, 200))),
        };
    }

    /// <summary>Two replicas fed the same entries until the live one goes on alone; sessions time out quickly so that they come and go.</summary>
    private sealed class Replicas(long memoryCapBytes)
    {
        private readonly Dictionary<ulong, ulong> _sequences = [];
        private ulong _nextLive = 1;
        private ulong _nextFrozen = 1;

        public CacheStateMachine Live { get; } = new(Options(memoryCapBytes));

        public CacheStateMachine Frozen { get; } = new(Options(memoryCapBytes));

        public long NowMs { get; set; } = 1_000_000;

        public CommandEnvelope NextEnvelope(Random random)
        {
            NowMs += random.Next(0, 3);
            if (random.Next(3) == 0)
            {
                return new CommandEnvelope(CommandEnvelope.NoSession, 0, NowMs);
            }

            var client = 1 + (ulong)random.Next(40);
            var sequence = _sequences.GetValueOrDefault(client);
            // Mostly the next sequence; sometimes a retry of the last, or a stale one.
            sequence = random.Next(6) switch
            {
                0 => sequence,
                1 => sequence > 1 ? sequence - 1 : sequence,
                _ => sequence + 1,
            };
            _sequences[client] = Math.Max(sequence, _sequences.GetValueOrDefault(client));
            return new CommandEnvelope(client, sequence, NowMs);
        }

        public void ApplyToBoth(byte[] entry)
        {
            ApplyToLive(entry);
            Frozen.Apply(_nextFrozen++, entry);
        }

        public void ApplyToLive(byte[] entry) => Live.Apply(_nextLive++, entry);

        private static CacheStateMachineOptions Options(long memoryCapBytes) =>
            new() { MemoryCapBytes = memoryCapBytes, SessionTimeout = TimeSpan.FromMilliseconds(200) };
    }
}
