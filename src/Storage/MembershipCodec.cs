using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>
/// Binary form of a membership: u32 voter count, voters (u64 each), u32 learner count, learners, then the contexts
/// (members' addresses): u32 count, and per context its member id (u64), UTF-8 length (u32) and bytes. The
/// membership always ends its record, so a record written before contexts existed simply ends after the learners
/// and reads back with none.
/// </summary>
internal static class MembershipCodec
{
    public static int EncodedLength(Membership membership) =>
        12 + 8 * (membership.Voters.Count + membership.Learners.Count) + membership.Contexts.Sum(c => 12 + Encoding.UTF8.GetByteCount(c.Value));

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

        BinaryPrimitives.WriteUInt32LittleEndian(into[pos..], (uint)membership.Contexts.Count);
        pos += 4;
        foreach (var (id, context) in membership.Contexts)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(into[pos..], id);
            var length = Encoding.UTF8.GetBytes(context, into[(pos + 12)..]);
            BinaryPrimitives.WriteUInt32LittleEndian(into[(pos + 8)..], (uint)length);
            pos += 12 + length;
        }

        return pos;
    }

    public static Membership Read(ReadOnlySpan<byte> from, out int consumed)
    {
        var pos = 0;
        var voters = ReadIds(from, ref pos);
        var learners = ReadIds(from, ref pos);
        var contexts = pos < from.Length ? ReadContexts(from, ref pos) : [];
        consumed = pos;
        return Membership.Of(voters, learners, contexts);
    }

    public static string ToText(IEnumerable<ulong> ids) => string.Join(",", ids);

    /// <summary>Contexts as a JSON object {"id": "context"} for the SQLite metadata ("" when there are none).</summary>
    public static string ContextsToText(Membership membership) =>
        membership.Contexts.IsEmpty ? "" : JsonSerializer.Serialize(membership.Contexts.ToDictionary(c => c.Key.ToString(CultureInfo.InvariantCulture), c => c.Value));

    public static IEnumerable<KeyValuePair<ulong, string>> ContextsFromText(string text) =>
        text.Length == 0
            ? []
            : (JsonSerializer.Deserialize<Dictionary<string, string>>(text) ?? []).Select(c => KeyValuePair.Create(ulong.Parse(c.Key, CultureInfo.InvariantCulture), c.Value));

    private static List<KeyValuePair<ulong, string>> ReadContexts(ReadOnlySpan<byte> from, ref int pos)
    {
        var count = BinaryPrimitives.ReadUInt32LittleEndian(from[pos..]);
        pos += 4;
        if (count > (from.Length - pos) / 12)
        {
            throw new FormatException($"membership claims {count} contexts in {from.Length - pos} bytes");
        }

        var contexts = new List<KeyValuePair<ulong, string>>((int)count);
        for (var i = 0; i < count; i++)
        {
            var id = BinaryPrimitives.ReadUInt64LittleEndian(from[pos..]);
            var length = BinaryPrimitives.ReadUInt32LittleEndian(from[(pos + 8)..]);
            pos += 12;
            if (length > from.Length - pos)
            {
                throw new FormatException($"the context of member {id} claims {length} bytes in {from.Length - pos}");
            }

            contexts.Add(KeyValuePair.Create(id, Encoding.UTF8.GetString(from.Slice(pos, (int)length))));
            pos += (int)length;
        }

        return contexts;
    }

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
