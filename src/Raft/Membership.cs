using System.Collections.Immutable;

namespace Dcache.Raft;

/// <summary>
/// The cluster configuration: voters decide elections and commitment; learners receive the log but never vote
/// and never count toward a quorum. Sets are sorted so that iteration (and so every message order) is deterministic.
/// <see cref="Contexts"/> holds, per member, the context its last change carried: opaque to Raft (the host puts a
/// member's network address there), so it travels through the log and snapshots with the membership itself.
/// </summary>
public sealed record Membership(ImmutableSortedSet<ulong> Voters, ImmutableSortedSet<ulong> Learners)
{
    public static Membership Empty { get; } = new([], []);

    /// <summary>Member id -> the context its change carried; members whose changes carried none are absent.</summary>
    public ImmutableSortedDictionary<ulong, string> Contexts { get; init; } = ImmutableSortedDictionary<ulong, string>.Empty;

    public static Membership Of(IEnumerable<ulong> voters, IEnumerable<ulong>? learners = null, IEnumerable<KeyValuePair<ulong, string>>? contexts = null) =>
        new(voters.ToImmutableSortedSet(), (learners ?? []).ToImmutableSortedSet()) { Contexts = (contexts ?? []).ToImmutableSortedDictionary() };

    /// <summary>The context of <paramref name="id"/>, or null when it has none.</summary>
    public string? ContextOf(ulong id) => Contexts.TryGetValue(id, out var context) ? context : null;

    public bool IsVoter(ulong id) => Voters.Contains(id);

    public bool IsLearner(ulong id) => Learners.Contains(id);

    public bool Contains(ulong id) => IsVoter(id) || IsLearner(id);

    public IEnumerable<ulong> All => Voters.Union(Learners);

    public int QuorumSize => Voters.Count / 2 + 1;

    /// <summary>The configuration after applying <paramref name="change"/>; validity is checked by <see cref="Validate"/>.</summary>
    public Membership Apply(ConfChange change)
    {
        var contexts = change.Type == ConfChangeType.Remove
            ? Contexts.Remove(change.NodeId)
            : string.IsNullOrEmpty(change.Context) ? Contexts : Contexts.SetItem(change.NodeId, change.Context);
        return change.Type switch
        {
            ConfChangeType.AddVoter => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts },
            ConfChangeType.AddLearner => new(Voters, Learners.Add(change.NodeId)) { Contexts = contexts },
            ConfChangeType.Remove => new(Voters.Remove(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts },
            ConfChangeType.PromoteLearner => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts },
            _ => this,
        };
    }

    /// <summary>Null when <paramref name="change"/> may be proposed against this configuration, else why not.</summary>
    public string? Validate(ConfChange change)
    {
        if (change.NodeId == 0)
        {
            return "node id 0 is reserved";
        }

        if (change.Context is { } context && System.Text.Encoding.UTF8.GetByteCount(context) > ConfChange.MaxContextBytes)
        {
            return $"a change's context is limited to {ConfChange.MaxContextBytes} bytes";
        }

        return change.Type switch
        {
            ConfChangeType.AddVoter when Contains(change.NodeId) => $"node {change.NodeId} is already a member",
            ConfChangeType.AddLearner when Contains(change.NodeId) => $"node {change.NodeId} is already a member",
            ConfChangeType.Remove when !Contains(change.NodeId) => $"node {change.NodeId} is not a member",
            ConfChangeType.Remove when IsVoter(change.NodeId) && Voters.Count == 1 => "cannot remove the last voter",
            ConfChangeType.PromoteLearner when !IsLearner(change.NodeId) => $"node {change.NodeId} is not a learner",
            ConfChangeType.AddVoter or ConfChangeType.AddLearner or ConfChangeType.Remove or ConfChangeType.PromoteLearner => null,
            _ => $"unknown change type {change.Type}",
        };
    }

    public override string ToString() =>
        $"voters=[{string.Join(",", Voters)}] learners=[{string.Join(",", Learners)}]";

    public bool Equals(Membership? other) =>
        other is not null && Voters.SequenceEqual(other.Voters) && Learners.SequenceEqual(other.Learners) && Contexts.SequenceEqual(other.Contexts);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var v in Voters)
        {
            hash.Add(v);
        }

        hash.Add(-1);
        foreach (var l in Learners)
        {
            hash.Add(l);
        }

        foreach (var (id, context) in Contexts)
        {
            hash.Add(id);
            hash.Add(context, StringComparer.Ordinal);
        }

        return hash.ToHashCode();
    }
}

public enum ConfChangeType : byte
{
    AddVoter = 1,
    AddLearner = 2,
    Remove = 3,
    PromoteLearner = 4,
}

/// <summary>
/// A single-server membership change. It takes effect on every node when the entry carrying it is applied.
/// <paramref name="Context"/> is opaque to Raft and kept in <see cref="Membership.Contexts"/> (Dcache: the member's
/// gRPC address). Encoded as type (1 byte), node id (8 bytes) and the context's UTF-8 bytes; a change written
/// before contexts existed is the 9-byte prefix alone and still decodes, with no context.
/// </summary>
public readonly record struct ConfChange(ConfChangeType Type, ulong NodeId, string? Context = null)
{
    /// <summary>Length of a change without a context.</summary>
    public const int EncodedLength = 9;

    public const int MaxContextBytes = 1024;

    public byte[] Encode()
    {
        var contextBytes = string.IsNullOrEmpty(Context) ? 0 : System.Text.Encoding.UTF8.GetByteCount(Context);
        var buffer = new byte[EncodedLength + contextBytes];
        buffer[0] = (byte)Type;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(1), NodeId);
        if (contextBytes > 0)
        {
            System.Text.Encoding.UTF8.GetBytes(Context, buffer.AsSpan(EncodedLength));
        }

        return buffer;
    }

    public static ConfChange Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length < EncodedLength || data.Length > EncodedLength + MaxContextBytes)
        {
            throw new FormatException($"a conf change is {EncodedLength} to {EncodedLength + MaxContextBytes} bytes, got {data.Length}");
        }

        var context = data.Length > EncodedLength ? System.Text.Encoding.UTF8.GetString(data[EncodedLength..]) : null;
        return new ConfChange((ConfChangeType)data[0], System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data[1..]), context);
    }
}
