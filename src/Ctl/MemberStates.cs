using Dcache.Protocol;
using Dcache.Protocol.Admin;

namespace Dcache.Ctl;

/// <summary>
/// The state a membership change asks for, looked for in a leader's member list: after an attempt whose outcome was
/// unknown, the change is already in effect when the list shows it. Each returns what it found, or null. Addresses are
/// compared as nodes (<see cref="ClusterMembers.SameNode"/>), and by the log's record of the member, not where the leader dials it: a leader's InitialCluster may list the member at a
/// proxy, or at a new address before any update has committed.
/// </summary>
internal static class MemberStates
{
    public static string? LearnerAt(MemberListReply list, ulong id, string address) =>
        Find(list, id) is { Voter: false } member && RecordedAddress(member) is var recorded && ClusterMembers.SameNode(recorded, address)
            ? $"node {id} is a learner at {recorded}"
            : null;

    public static string? Voter(MemberListReply list, ulong id) => Find(list, id) is { Voter: true } ? $"node {id} is a voter" : null;

    public static string? NotMember(MemberListReply list, ulong id) => Find(list, id) is null ? $"node {id} is not a member" : null;

    /// <summary>Only an update sets <c>moved_to</c>: the same address recorded by the member's add is not a move.</summary>
    public static string? MovedTo(MemberListReply list, ulong id, string address) =>
        Find(list, id) is { } member && ClusterMembers.SameNode(member.MovedTo, address) ? $"node {id} was moved to {member.MovedTo}" : null;

    private static MemberInfo? Find(MemberListReply list, ulong id) => list.Members.FirstOrDefault(member => member.Id == id);

    /// <summary>A leader older than <c>recorded_address</c> sends none; where it dials the member is all there is then.</summary>
    private static string RecordedAddress(MemberInfo member) => member.RecordedAddress is { Length: > 0 } recorded ? recorded : member.Address;
}
