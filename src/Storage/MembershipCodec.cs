using System.Buffers.Binary;
using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>Binary form of a membership: u32 voter count, voters (u64 each), u32 learner count, learners.</summary>
internal static class MembershipCodec
{
    public static int EncodedLength(Membership membership) => 8 + 8 * (membership.Voters.Count + membership.Learners.Count);

    public static int Write(Membership membership, Span<byte> into)
    {
        var pos = 0;
        BinaryPrimitives.WriteUInt32LittleEndian(into[pos..], (uint)membership.Voters.Count);
        pos += 4;
        foreach (var voter in membership.Voters)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(into[pos..], voter);
            pos += 8;
        }

        BinaryPrimitives.WriteUInt32LittleEndian(into[pos..], (uint)membership.Learners.Count);
        pos += 4;
        foreach (var learner in membership.Learners)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(into[pos..], learner);
            pos += 8;
        }

        return pos;
    }

    public static Membership Read(ReadOnlySpan<byte> from, out int consumed)
    {
        var pos = 0;
        var voters = ReadIds(from, ref pos);
        var learners = ReadIds(from, ref pos);
        consumed = pos;
        return Membership.Of(voters, learners);
    }

    public static string ToText(IEnumerable<ulong> ids) => string.Join(",", ids);

    public static IEnumerable<ulong> FromText(string text) =>
        text.Length == 0 ? [] : text.Split(',').Select(s => ulong.Parse(s, System.Globalization.CultureInfo.InvariantCulture));

    private static List<ulong> ReadIds(ReadOnlySpan<byte> from, ref int pos)
    {
        var count = BinaryPrimitives.ReadUInt32LittleEndian(from[pos..]);
        pos += 4;
        if (count > (from.Length - pos) / 8)
        {
            throw new FormatException($"membership claims {count} ids in {from.Length - pos} bytes");
        }

        var ids = new List<ulong>((int)count);
        for (var i = 0; i < count; i++)
        {
            ids.Add(BinaryPrimitives.ReadUInt64LittleEndian(from[pos..]));
            pos += 8;
        }

        return ids;
    }
}
