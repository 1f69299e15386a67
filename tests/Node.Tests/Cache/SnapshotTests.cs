using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

public sealed class SnapshotTests
{
    private static CacheHarness Populated()
    {
        var cache = new CacheHarness(new CacheStateMachineOptions { MemoryCapBytes = 1 << 20 });
        for (var i = 0; i < 500; i++)
        {
            cache.Set("key" + i, new string((char)('a' + (i % 26)), i % 50));
            cache.NowMs += 3;
        }

        cache.Set("ttl", "v", SetOptions.ExpiringAt(cache.NowMs + 60_000));
        cache.Set("expired-not-purged", "v", SetOptions.ExpiringAt(cache.NowMs + 1));
        cache.Set("big", new string('B', SnapshotSink.ChunkSize * 3 + 17));
        cache.Set("empty", "");
        cache.Apply(Entries.IncrementBy(cache.Envelope(42, 1), "counter", 7));
        cache.Apply(Entries.Set(cache.Envelope(43, 1), "key1", "v", new SetOptions(ReturnOldValue: true)));
        cache.Apply(Entries.IncrementBy(cache.Envelope(44, 1), "key2", 1)); // an error reply, cached
        cache.NowMs += 5;
        cache.Apply(Entries.MultiSet(cache.Envelope(45, 3), "m1", "1", "m2", "2"));
        cache.Delete("key3");
        return cache;
    }

    private static byte[] Snapshot(CacheStateMachine machine)
    {
        using var stream = new MemoryStream();
        machine.WriteSnapshot(stream);
        return stream.ToArray();
    }

    [Fact]
    public void Round_trip_preserves_the_digest_and_everything_in_the_state()
    {
        var cache = Populated();
        var bytes = Snapshot(cache.Machine);
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(bytes), cache.Machine.Options);

        Assert.Equal(cache.Machine.Digest(), restored.Digest());
        Assert.Equal(bytes, Snapshot(restored));
        Assert.Equal(cache.Machine.AppliedIndex, restored.AppliedIndex);
        Assert.Equal(cache.Machine.ClockMs, restored.ClockMs);
        Assert.Equal(cache.Machine.UsedBytes, restored.UsedBytes);
        Assert.Equal(cache.Machine.SessionCount, restored.SessionCount);
        Assert.Equal(cache.Machine.TimeToLiveMs(Entries.B("ttl"), cache.NowMs), restored.TimeToLiveMs(Entries.B("ttl"), cache.NowMs));
        Assert.True(restored.TryGet(Entries.B("big"), cache.NowMs, out var big));
        Assert.Equal(SnapshotSink.ChunkSize * 3 + 17, big.Length);
    }

    [Fact]
    public void The_restored_machine_continues_exactly_like_the_original()
    {
        var original = Populated();
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(original.Machine)), original.Machine.Options);

        var index = original.Machine.AppliedIndex;
        var now = original.NowMs + 10;
        byte[][] more =
        [
            Entries.Set(new CommandEnvelope(0, 0, now), "new", "x"),
            Entries.PurgeExpired(new CommandEnvelope(0, 0, now), now),
            Entries.IncrementBy(new CommandEnvelope(42, 1, now), "counter", 7), // duplicate: cached reply
            Entries.IncrementBy(new CommandEnvelope(42, 2, now), "counter", 7),
        ];
        foreach (var entry in more)
        {
            index++;
            Assert.Equal(original.Machine.Apply(index, entry), restored.Apply(index, entry));
        }

        Assert.Equal(original.Machine.Digest(), restored.Digest());
    }

    [Fact]
    public async Task A_capture_is_the_state_at_capture_time_even_while_apply_goes_on()
    {
        var cache = Populated();
        var digestAtCapture = cache.Machine.Digest();
        var capture = cache.Machine.CaptureSnapshot();
        Assert.Equal(cache.Machine.AppliedIndex, capture.AppliedIndex);

        // Write the capture on another thread while the machine overwrites, deletes and evicts the captured keys.
        var writing = Task.Run(() =>
        {
            using var stream = new MemoryStream();
            capture.WriteTo(stream);
            return stream.ToArray();
        });
        for (var i = 0; i < 2_000; i++)
        {
            cache.Set("key" + (i % 500), "changed" + i);
            cache.Delete("key" + ((i + 7) % 500));
            cache.IncrementBy("counter", 1);
        }

        var bytes = await writing;
        Assert.Equal(digestAtCapture, capture.Digest());
        Assert.Equal(digestAtCapture, CacheStateMachine.FromSnapshot(new MemoryStream(bytes)).Digest());
        Assert.NotEqual(digestAtCapture, cache.Machine.Digest());
    }

    [Fact]
    public void A_stop_ends_the_building_of_a_large_snapshot_partway_through_its_keys()
    {
        var cache = new CacheHarness();
        var keys = CacheStateMachine.KeysPerCancellationCheck * 8;
        for (var i = 0; i < keys; i++)
        {
            cache.Set("key" + i, "value");
        }

        var bytes = Snapshot(cache.Machine);
        using var stopping = new CancellationTokenSource();
        // The stop comes with the second chunk read, a few thousand keys in.
        var input = new StopAfterStream(bytes, stopAfterBytes: SnapshotSink.ChunkSize, stopping);

        Assert.Throws<OperationCanceledException>(() => CacheStateMachine.FromSnapshot(input, cancellationToken: stopping.Token));
        Assert.True(input.Position < bytes.Length, $"the whole snapshot ({bytes.Length} bytes) was read before the stop was seen");
        Assert.Equal(cache.Machine.Digest(), CacheStateMachine.FromSnapshot(new MemoryStream(bytes)).Digest());
    }

    /// <summary>Cancels <paramref name="stopping"/> once <paramref name="stopAfterBytes"/> have been read: a stop arriving mid-build.</summary>
    private sealed class StopAfterStream(byte[] bytes, int stopAfterBytes, CancellationTokenSource stopping) : MemoryStream(bytes, writable: false)
    {
        // MemoryStream's span overload defers to this one in a derived type.
        public override int Read(byte[] buffer, int offset, int count)
        {
            if (Position >= stopAfterBytes)
            {
                stopping.Cancel();
            }

            return base.Read(buffer, offset, count);
        }
    }

    [Fact]
    public void Loading_a_snapshot_keeps_the_local_counters_counting()
    {
        // They are exported as Prometheus counters: a follower installing a leader's snapshot made them fall to zero,
        // which a scraper takes for a restart and loses what was counted since its last scrape.
        var source = Populated();
        var target = new CacheHarness(source.Machine.Options);
        target.Set("here", "x");
        Assert.NotNull(target.Get("here"));
        Assert.Null(target.Get("missing"));
        var before = target.Machine.GetStatistics();

        target.Machine.LoadSnapshot(new MemoryStream(Snapshot(source.Machine)));

        var after = target.Machine.GetStatistics();
        Assert.Equal((before.Hits, before.Misses), (after.Hits, after.Misses));
        Assert.True(before.Hits > 0 && before.Misses > 0);
    }

    [Fact]
    public void Load_into_an_existing_machine_replaces_its_state()
    {
        var source = Populated();
        var target = new CacheHarness(source.Machine.Options);
        target.Set("only-here", "x");
        target.Machine.LoadSnapshot(new MemoryStream(Snapshot(source.Machine)));
        Assert.Equal(source.Machine.Digest(), target.Machine.Digest());
        Assert.Null(target.Get("only-here"));
    }

    [Fact]
    public void Equal_states_give_identical_bytes_and_different_states_different_digests()
    {
        Assert.Equal(Snapshot(Populated().Machine), Snapshot(Populated().Machine));

        var a = new CacheHarness();
        var b = new CacheHarness();
        a.Set("x", "1");
        b.Set("x", "2");
        Assert.NotEqual(a.Machine.Digest(), b.Machine.Digest());
    }

    [Fact]
    public void Empty_machine_round_trips()
    {
        var empty = new CacheStateMachine();
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(Snapshot(empty)));
        Assert.Equal(empty.Digest(), restored.Digest());
        Assert.Equal(64, empty.Digest().Length);
    }

    [Fact]
    public void Every_truncation_fails_with_a_clear_error_and_leaves_the_target_unchanged()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1", SetOptions.ExpiringAt(cache.NowMs + 5));
        cache.Apply(Entries.IncrementBy(cache.Envelope(9, 1), "n", 1));
        var bytes = Snapshot(cache.Machine);

        var target = new CacheHarness();
        target.Set("mine", "1");
        var digest = target.Machine.Digest();
        for (var length = 0; length < bytes.Length; length++)
        {
            var error = Assert.Throws<InvalidDataException>(() => target.Machine.LoadSnapshot(new MemoryStream(bytes, 0, length)));
            Assert.StartsWith("Cache snapshot is corrupt or truncated", error.Message, StringComparison.Ordinal);
        }

        Assert.Equal(digest, target.Machine.Digest());
    }

    [Fact]
    public void Every_single_bit_flip_is_detected()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1", SetOptions.ExpiringAt(cache.NowMs + 5));
        cache.Apply(Entries.Set(cache.Envelope(9, 1), "b", "2", new SetOptions(ReturnOldValue: true)));
        var bytes = Snapshot(cache.Machine);
        for (var bit = 0; bit < bytes.Length * 8; bit++)
        {
            var damaged = (byte[])bytes.Clone();
            damaged[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(damaged)));
        }
    }

    [Fact]
    public void Trailing_bytes_wrong_magic_and_unknown_version_are_refused()
    {
        var bytes = Snapshot(Populated().Machine);

        var trailing = bytes.Concat(new byte[] { 0 }).ToArray();
        Assert.Contains("after the checksum", Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(trailing))).Message, StringComparison.Ordinal);

        var magic = (byte[])bytes.Clone();
        magic[0] = (byte)'X';
        Assert.Contains("bad magic", Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(magic))).Message, StringComparison.Ordinal);

        var version = (byte[])bytes.Clone();
        version[8] = 99;
        Assert.Contains("version 99", Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(version))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_corrupted_length_is_caught_before_a_huge_allocation()
    {
        var cache = new CacheHarness();
        cache.Set("a", "1");
        var bytes = Snapshot(cache.Machine);

        // Header: magic 8 + version 1 + index 8 + clock 8, revision floor 8 + removal floor 8 + removal bucket count (1
        // byte, 0); then the key count varint (1 byte), then the first key's length.
        var keyLengthOffset = 8 + 1 + 8 + 8 + 8 + 8 + 1 + 1;
        Assert.Equal(1, bytes[keyLengthOffset]);
        byte[] hugeLength = [0xFF, 0xFF, 0xFF, 0xFF, 0x01]; // 536,870,911 bytes: within the limit, past the end
        var damaged = bytes.Take(keyLengthOffset).Concat(hugeLength).Concat(bytes.Skip(keyLengthOffset + 1)).ToArray();
        var error = Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(damaged)));
        Assert.Contains("runs past the end", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Snapshot_streams_through_a_non_seekable_stream_in_chunks()
    {
        var cache = Populated();
        var bytes = Snapshot(cache.Machine);
        var restored = CacheStateMachine.FromSnapshot(new TrickleStream(bytes, maxRead: 1000));
        Assert.Equal(cache.Machine.Digest(), restored.Digest());

        var truncated = new TrickleStream(bytes.AsSpan(0, bytes.Length - 40).ToArray(), maxRead: 777);
        Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(truncated));
    }

    /// <summary>A forward-only stream that hands out at most a few bytes per read, as a network stream may.</summary>
    private sealed class TrickleStream(byte[] data, int maxRead) : Stream
    {
        private int _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            var n = Math.Min(Math.Min(count, maxRead), data.Length - _position);
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
