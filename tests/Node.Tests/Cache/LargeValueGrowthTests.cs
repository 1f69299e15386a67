using System.Runtime.InteropServices;
using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// A large value built by APPEND or SETRANGE past its end: each such write copied the whole value into a new array,
/// on every replica, inside the node's loop (a one-byte APPEND to a value of 500 MB answered UNKNOWN after seconds and
/// cost the leader its leadership). Such writes now fill spare room the key's own array keeps past the value, while
/// every value a reply, a read or a snapshot already holds keeps its bytes, and replicas with or without that room (one
/// restored from a snapshot has none) agree on every reply, on the memory charged and on the digest.
/// </summary>
public sealed class LargeValueGrowthTests
{
    private const int Large = CacheStateMachine.GrowthRoomFromBytes * 2;

    [Fact]
    public void Appends_to_a_large_value_copy_it_a_few_times_not_at_each_append()
    {
        var cache = new CacheHarness();
        cache.Set("big", new string('a', Large));
        var arrays = new HashSet<byte[]>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < 1_000; i++)
        {
            Assert.Equal(Int(Large + i + 1), cache.Apply(Entries.Append(cache.Envelope(), "big", "b")));
            arrays.Add(ArrayOf("big", cache));
        }

        // 131,072 bytes grown by 1,000: one copy when the first APPEND came (the SET's array is exact), none after.
        Assert.Single(arrays);
        Assert.Equal(new string('a', Large) + new string('b', 1_000), cache.Get("big"));
        Assert.Equal(CacheEntry.ChargeFor(3, Large + 1_000), cache.Machine.UsedBytes);
    }

    [Fact]
    public void A_value_read_before_an_append_into_its_room_keeps_its_bytes_and_so_does_a_copy_of_the_key()
    {
        var cache = new CacheHarness();
        cache.Set("big", new string('a', Large));
        cache.Apply(Entries.Append(cache.Envelope(), "big", "b"));
        var before = cache.Machine.Get(Entries.B("big"), cache.NowMs);
        Assert.Equal(Int(1), cache.Apply(Entries.Copy(cache.Envelope(), "big", "copy")));

        cache.Apply(Entries.Append(cache.Envelope(), "big", "c"));
        cache.Apply(Entries.Append(cache.Envelope(), "copy", "d"));
        cache.Apply(Entries.SetRange(cache.Envelope(), "copy", Large + 5, "e"));

        Assert.Equal(Large + 1, before.Bulk.Length);
        Assert.Equal(new string('a', Large) + "b", Text(before));
        Assert.Equal(new string('a', Large) + "bc", cache.Get("big"));
        Assert.Equal(new string('a', Large) + "bd\0\0\0e", cache.Get("copy"));
    }

    [Fact]
    public void A_setrange_past_the_end_fills_the_gap_with_zeros_in_the_room_and_one_inside_the_value_copies_it()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(Large), cache.Apply(Entries.SetRange(cache.Envelope(), "big", Large - 1, "x")));
        var grown = ArrayOf("big", cache);
        Assert.Equal(Int(Large + 10), cache.Apply(Entries.SetRange(cache.Envelope(), "big", Large + 7, "yyy")));
        Assert.Same(grown, ArrayOf("big", cache));
        var held = cache.Machine.Get(Entries.B("big"), cache.NowMs);

        Assert.Equal(Int(Large + 10), cache.Apply(Entries.SetRange(cache.Envelope(), "big", 0, "z")));
        Assert.NotSame(grown, ArrayOf("big", cache));
        Assert.Equal(0, held.Bulk.Span[0]);
        Assert.Equal("z" + new string('\0', Large - 2) + "x\0\0\0\0\0\0\0yyy", cache.Get("big"));
    }

    [Fact]
    public void A_replica_restored_from_a_snapshot_has_no_room_yet_and_agrees_with_one_that_has()
    {
        var applied = new CacheHarness();
        applied.Set("big", new string('a', Large));
        applied.Apply(Entries.Append(applied.Envelope(), "big", "b"));
        var snapshot = new MemoryStream();
        applied.Machine.WriteSnapshot(snapshot);
        var restored = CacheStateMachine.FromSnapshot(new MemoryStream(snapshot.ToArray()), null);
        var held = restored.Get(Entries.B("big"), applied.NowMs);

        byte[][] entries =
        [
            Entries.Append(applied.Envelope(), "big", "c"),
            Entries.SetRange(applied.Envelope(), "big", Large + 9, "d"),
            Entries.Copy(applied.Envelope(), "big", "copy"),
            Entries.Append(applied.Envelope(), "copy", new string('e', Large)),
            Entries.SetRange(applied.Envelope(), "big", 3, "f"),
            Entries.Append(applied.Envelope(), "big", "g"),
        ];
        foreach (var entry in entries)
        {
            var index = applied.Machine.AppliedIndex + 1;
            Assert.Equal(applied.Machine.Apply(index, entry), restored.Apply(index, entry));
            Assert.Equal(applied.Machine.Digest(), restored.Digest());
            Assert.Equal(applied.Machine.UsedBytes, restored.UsedBytes);
        }

        Assert.Equal(new string('a', Large) + "b", Text(held));
    }

    private static byte[] ArrayOf(string key, CacheHarness cache)
    {
        Assert.True(MemoryMarshal.TryGetArray(cache.Machine.Get(Entries.B(key), cache.NowMs).Bulk, out var segment));
        return segment.Array!;
    }

    private static string Text(CacheReply reply) => System.Text.Encoding.Latin1.GetString(reply.Bulk.Span);
}
