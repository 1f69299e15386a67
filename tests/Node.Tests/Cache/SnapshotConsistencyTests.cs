using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// Snapshots whose checksum is right but whose content breaks an invariant the loaded state relies on: such a snapshot
/// can only come from a bug or a hand-made file, and must be refused rather than loaded into a state that later
/// misbehaves (session expiry that stops too early, a revision WATCH would misjudge, a removal table out of order).
/// </summary>
public sealed class SnapshotConsistencyTests
{
    private const ulong AppliedIndex = 100;
    private const long ClockMs = 1_000_000;

    private sealed record Key(string Name, string Value, ulong Revision);

    private sealed record Session(ulong ClientId, ulong Sequence, long ActiveMs);

    /// <summary>A format-2 snapshot written field by field, with a correct trailer.</summary>
    private static byte[] Craft(ulong revisionFloor, (ulong Bucket, ulong Revision)[] removals, Key[] keys, Session[] sessions)
    {
        using var stream = new MemoryStream();
        using (var sink = new SnapshotSink(stream))
        {
            sink.WriteRaw("DCSNAP01"u8);
            sink.WriteByte(CacheStateMachine.SnapshotFormatVersion);
            sink.WriteUInt64(AppliedIndex);
            sink.WriteInt64(ClockMs);
            sink.WriteUInt64(revisionFloor);
            sink.WriteUInt64(revisionFloor);
            sink.WriteVarUInt64((ulong)removals.Length);
            foreach (var (bucket, revision) in removals)
            {
                sink.WriteVarUInt64(bucket);
                sink.WriteVarUInt64(revision);
            }

            sink.WriteVarUInt64((ulong)keys.Length);
            foreach (var key in keys)
            {
                sink.WriteBytes(Entries.B(key.Name));
                sink.WriteBytes(Entries.B(key.Value));
                sink.WriteInt64(long.MaxValue);
                sink.WriteVarUInt64(key.Revision);
            }

            sink.WriteVarUInt64((ulong)sessions.Length);
            foreach (var session in sessions)
            {
                sink.WriteUInt64(session.ClientId);
                sink.WriteVarUInt64(session.Sequence);
                sink.WriteInt64(session.ActiveMs);
                sink.WriteByte((byte)CacheReplyKind.Ok);
            }

            sink.Finish();
        }

        return stream.ToArray();
    }

    private static InvalidDataException Refused(byte[] snapshot) =>
        Assert.Throws<InvalidDataException>(() => CacheStateMachine.FromSnapshot(new MemoryStream(snapshot)));

    [Fact]
    public void A_crafted_snapshot_that_keeps_every_invariant_loads()
    {
        var machine = CacheStateMachine.FromSnapshot(new MemoryStream(Craft(
            revisionFloor: 10,
            removals: [(3, 20), (7, 30)],
            keys: [new Key("a", "1", 10), new Key("b", "2", AppliedIndex)],
            sessions: [new Session(5, 1, ClockMs - 10), new Session(6, 1, ClockMs)])));

        Assert.Equal(AppliedIndex, machine.AppliedIndex);
        Assert.Equal(2, machine.StoredKeyCount);
        Assert.Equal(2, machine.SessionCount);
    }

    [Fact]
    public void Sessions_out_of_order_of_activity_are_refused()
    {
        // Session expiry stops at the first live session of the activity list: one older behind a newer would never expire.
        var error = Refused(Craft(10, [], [], [new Session(5, 1, ClockMs), new Session(6, 1, ClockMs - 10)]));
        Assert.Contains("not in order of activity", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(9UL)] // below the revision floor
    [InlineData(AppliedIndex + 1)] // after the applied index
    public void A_key_revision_outside_the_floor_and_the_applied_index_is_refused(ulong revision)
    {
        var error = Refused(Craft(10, [], [new Key("a", "1", revision)], []));
        Assert.Contains("revision is outside", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_removal_table_naming_a_bucket_twice_is_refused()
    {
        var error = Refused(Craft(10, [(3, 20), (3, 30)], [], []));
        Assert.Contains("removal table is out of order", error.Message, StringComparison.Ordinal);
    }
}
