using System.Collections.Immutable;

namespace Dcache.Raft;

/// <summary>
/// The cluster configuration: voters decide elections and commitment; learners receive the log but never vote
/// and never count toward a quorum. Sets are sorted so that iteration (and so every message order) is deterministic.
/// </summary>
public sealed record Membership(ImmutableSortedSet<ulong> Voters, ImmutableSortedSet<ulong> Learners)
{
    public static Membership Empty { get; } = new([], []);

    public static Membership Of(IEnumerable<ulong> voters, IEnumerable<ulong>? learners = null) =>
        new(voters.ToImmutableSortedSet(), (learners ?? []).ToImmutableSortedSet());

    public bool IsVoter(ulong id) => Voters.Contains(id);

    public bool IsLearner(ulong id) => Learners.Contains(id);

    public bool Contains(ulong id) => IsVoter(id) || IsLearner(id);

    public IEnumerable<ulong> All => Voters.Union(Learners);

    public int QuorumSize => Voters.Count / 2 + 1;

    /// <summary>The configuration after applying <paramref name="change"/>; validity is checked by <see cref="Validate"/>.</summary>
    public Membership Apply(ConfChange change) => change.Type switch
    {
        ConfChangeType.AddVoter => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)),
        ConfChangeType.AddLearner => new(Voters, Learners.Add(change.NodeId)),
        ConfChangeType.Remove => new(Voters.Remove(change.NodeId), Learners.Remove(change.NodeId)),
        ConfChangeType.PromoteLearner => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)),
        _ => this,
    };

    /// <summary>Null when <paramref name="change"/> may be proposed against this configuration, else why not.</summary>
    public string? Validate(ConfChange change)
    {
        if (change.NodeId == 0)
        {
            return "node id 0 is reserved";
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
        other is not null && Voters.SequenceEqual(other.Voters) && Learners.SequenceEqual(other.Learners);

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

/// <summary>A single-server membership change. It takes effect on every node when the entry carrying it is applied.</summary>
public readonly record struct ConfChange(ConfChangeType Type, ulong NodeId)
{
    public const int EncodedLength = 9;

    public byte[] Encode()
    {
        var buffer = new byte[EncodedLength];
        buffer[0] = (byte)Type;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buffer.AsSpan(1), NodeId);
        return buffer;
    }

    public static ConfChange Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length != EncodedLength)
        {
            throw new FormatException($"a conf change is {EncodedLength} bytes, got {data.Length}");
        }

        return new ConfChange((ConfChangeType)data[0], System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data[1..]));
    }
}
