using System.Collections.Immutable;

namespace Dcache.Raft;

/// <summary>
/// The cluster configuration: voters decide elections and commitment; learners receive the log but never vote
/// and never count toward a quorum. Sets are sorted so that iteration (and so every message order) is deterministic.
/// <see cref="Contexts"/> holds, per member, the context its last change carried: opaque to Raft (the host puts a
/// member's network address there), so it travels through the log and snapshots with the membership itself.
/// <see cref="UpdatedContexts"/> says which of those contexts an <see cref="ConfChangeType.UpdateContext"/> change set.
/// </summary>
public sealed record Membership(ImmutableSortedSet<ulong> Voters, ImmutableSortedSet<ulong> Learners)
{
    public static Membership Empty { get; } = new([], []);

    /// <summary>Member id -> the context its change carried; members whose changes carried none are absent.</summary>
    public ImmutableSortedDictionary<ulong, string> Contexts { get; init; } = ImmutableSortedDictionary<ulong, string>.Empty;

    /// <summary>
    /// Members whose context was last set by an <see cref="ConfChangeType.UpdateContext"/> change, rather than by the
    /// change that added them. An update is an explicit statement made after the member joined, so a host may let it
    /// outrank what it was configured with (Dcache: a member's new address outranks an InitialCluster entry). Kept
    /// with the membership, through the log and snapshots, so that it survives compaction and restarts.
    /// </summary>
    public ImmutableSortedSet<ulong> UpdatedContexts { get; init; } = [];

    public static Membership Of(IEnumerable<ulong> voters, IEnumerable<ulong>? learners = null, IEnumerable<KeyValuePair<ulong, string>>? contexts = null, IEnumerable<ulong>? updatedContexts = null) =>
        new(voters.ToImmutableSortedSet(), (learners ?? []).ToImmutableSortedSet())
        {
            Contexts = (contexts ?? []).ToImmutableSortedDictionary(),
            UpdatedContexts = (updatedContexts ?? []).ToImmutableSortedSet(),
        };

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
        var carriesContext = !string.IsNullOrEmpty(change.Context);
        var contexts = change.Type == ConfChangeType.Remove
            ? Contexts.Remove(change.NodeId)
            : carriesContext ? Contexts.SetItem(change.NodeId, change.Context!) : Contexts;
        // Whatever set the member's context last decides whether it counts as updated.
        var updated = change.Type == ConfChangeType.UpdateContext
            ? UpdatedContexts.Add(change.NodeId)
            : change.Type == ConfChangeType.Remove || carriesContext ? UpdatedContexts.Remove(change.NodeId) : UpdatedContexts;
        return change.Type switch
        {
            ConfChangeType.AddVoter => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts, UpdatedContexts = updated },
            ConfChangeType.AddLearner => new(Voters, Learners.Add(change.NodeId)) { Contexts = contexts, UpdatedContexts = updated },
            ConfChangeType.Remove => new(Voters.Remove(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts, UpdatedContexts = updated },
            ConfChangeType.PromoteLearner => new(Voters.Add(change.NodeId), Learners.Remove(change.NodeId)) { Contexts = contexts, UpdatedContexts = updated },
            ConfChangeType.UpdateContext => this with { Contexts = contexts, UpdatedContexts = updated },
            _ => throw new ArgumentOutOfRangeException(nameof(change), change.Type, "unknown membership change type"),
        };
    }

    /// <summary>
    /// The most members (voters and learners) a configuration may have. With <see cref="MaxContextsBytes"/> it bounds a
    /// configuration's size: a host stores one with each snapshot in a fixed place (Dcache: a 4 KiB commit record of the
    /// log), and a larger one would make every compaction fail.
    /// </summary>
    public const int MaxMembers = 64;

    /// <summary>The most bytes (UTF-8) the members' contexts may take in all.</summary>
    public const int MaxContextsBytes = 2048;

    /// <summary>Null when a configuration of <paramref name="members"/> with these contexts is within the size bounds, else why not.</summary>
    public static string? CheckSize(int members, IEnumerable<string> contexts)
    {
        if (members > MaxMembers)
        {
            return $"a cluster has at most {MaxMembers} members (voters and learners), not {members}";
        }

        var bytes = 0;
        foreach (var context in contexts)
        {
            var length = System.Text.Encoding.UTF8.GetByteCount(context);
            if (length > ConfChange.MaxContextBytes)
            {
                return $"a change's context is limited to {ConfChange.MaxContextBytes} bytes";
            }

            bytes += length;
        }

        return bytes > MaxContextsBytes ? $"the members' contexts are limited to {MaxContextsBytes} bytes in all, not {bytes}" : null;
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

        var refusal = change.Type switch
        {
            ConfChangeType.AddVoter when Contains(change.NodeId) => $"node {change.NodeId} is already a member",
            ConfChangeType.AddLearner when Contains(change.NodeId) => $"node {change.NodeId} is already a member",
            ConfChangeType.Remove when !Contains(change.NodeId) => $"node {change.NodeId} is not a member",
            ConfChangeType.Remove when IsVoter(change.NodeId) && Voters.Count == 1 => "cannot remove the last voter",
            ConfChangeType.PromoteLearner when !IsLearner(change.NodeId) => $"node {change.NodeId} is not a learner",
            ConfChangeType.UpdateContext when !Contains(change.NodeId) => $"node {change.NodeId} is not a member",
            ConfChangeType.UpdateContext when string.IsNullOrEmpty(change.Context) => $"updating node {change.NodeId} needs a context to set",
            ConfChangeType.AddVoter or ConfChangeType.AddLearner or ConfChangeType.Remove or ConfChangeType.PromoteLearner or ConfChangeType.UpdateContext => null,
            _ => $"unknown change type {change.Type}",
        };
        if (refusal is not null || change.Type == ConfChangeType.Remove)
        {
            return refusal;
        }

        // Only a change that makes the configuration larger is held to the bounds: one already past them (founded by an
        // older build) can still promote, shrink an address or remove.
        var after = Apply(change);
        return ContextsBytes(after) > Math.Max(MaxContextsBytes, ContextsBytes(this)) || after.Voters.Count + after.Learners.Count > Math.Max(MaxMembers, Voters.Count + Learners.Count)
            ? CheckSize(after.Voters.Count + after.Learners.Count, after.Contexts.Values)
            : null;
    }

    private static int ContextsBytes(Membership membership) => membership.Contexts.Values.Sum(System.Text.Encoding.UTF8.GetByteCount);

    public override string ToString() =>
        $"voters=[{string.Join(",", Voters)}] learners=[{string.Join(",", Learners)}]";

    public bool Equals(Membership? other) =>
        other is not null && Voters.SequenceEqual(other.Voters) && Learners.SequenceEqual(other.Learners) && Contexts.SequenceEqual(other.Contexts)
        && UpdatedContexts.SequenceEqual(other.UpdatedContexts);

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

        hash.Add(-2);
        foreach (var updated in UpdatedContexts)
        {
            hash.Add(updated);
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

    /// <summary>
    /// Sets an existing member's context (Dcache: moves it to a new address) and changes no voter or learner set.
    /// A log that may hold one needs every member on a build that knows it: an older build would skip it.
    /// </summary>
    UpdateContext = 5,
}

/// <summary>
/// A single-server membership change. It takes effect on every node when the entry carrying it is applied.
/// <paramref name="Context"/> is opaque to Raft and kept in <see cref="Membership.Contexts"/> (Dcache: the member's
/// gRPC address). Encoded as type (1 byte), node id (8 bytes) and the context's UTF-8 bytes; a change written
/// before contexts existed is the 9-byte prefix alone and still decodes, with no context. A type this build does not
/// know is refused when decoded (a newer build wrote it), so a node stops rather than apply it as something else.
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

        var type = (ConfChangeType)data[0];
        if (type is < ConfChangeType.AddVoter or > ConfChangeType.UpdateContext)
        {
            throw new FormatException($"membership change type {data[0]} is not one this build knows (it knows 1 to {(byte)ConfChangeType.UpdateContext}); upgrade this node");
        }

        var context = data.Length > EncodedLength ? System.Text.Encoding.UTF8.GetString(data[EncodedLength..]) : null;
        return new ConfChange(type, System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(data[1..]), context);
    }
}
