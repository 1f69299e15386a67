using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>
/// Binary form of a membership: u32 voter count, voters (u64 each), u32 learner count, learners, then the contexts
/// (members' addresses): u32 count, and per context its member id (u64), UTF-8 length (u32) and bytes, then, only
/// when some member's address was set by an update, u32 count and those members' ids (<see cref="Membership.UpdatedContexts"/>).
/// The membership always ends its record, so a record written before contexts (or updates) existed simply ends
/// earlier and reads back with none; and a record without updates is byte for byte what older builds wrote.
/// </summary>
internal static class MembershipCodec
{
    public static int EncodedLength(Membership membership) =>
        12 + 8 * (membership.Voters.Count + membership.Learners.Count) + membership.Contexts.Sum(c => 12 + Encoding.UTF8.GetByteCount(c.Value))
        + (membership.UpdatedContexts.IsEmpty ? 0 : 4 + 8 * membership.UpdatedContexts.Count);

    public static int Write(Membership membership, Span<byte> into)
    {
        var pos = WriteIds(membership.Voters, into);
        pos += WriteIds(membership.Learners, into[pos..]);

        BinaryPrimitives.WriteUInt32LittleEndian(into[pos..], (uint)membership.Contexts.Count);
        pos += 4;
        foreach (var (id, context) in membership.Contexts)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(into[pos..], id);
            var length = Encoding.UTF8.GetBytes(context, into[(pos + 12)..]);
            BinaryPrimitives.WriteUInt32LittleEndian(into[(pos + 8)..], (uint)length);
            pos += 12 + length;
        }

        if (!membership.UpdatedContexts.IsEmpty)
        {
            pos += WriteIds(membership.UpdatedContexts, into[pos..]);
        }

        return pos;
    }

    private static int WriteIds(IReadOnlyCollection<ulong> ids, Span<byte> into)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(into, (uint)ids.Count);
        var pos = 4;
        foreach (var id in ids)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(into[pos..], id);
            pos += 8;
        }

        return pos;
    }

    public static Membership Read(ReadOnlySpan<byte> from, out int consumed)
    {
        var pos = 0;
        var voters = ReadIds(from, ref pos);
        var learners = ReadIds(from, ref pos);
        var contexts = pos < from.Length ? ReadContexts(from, ref pos) : [];
        var updated = pos < from.Length ? ReadIds(from, ref pos) : [];
        consumed = pos;
        return Membership.Of(voters, learners, contexts, updated);
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
