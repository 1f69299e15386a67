using System.Globalization;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Protocol;
using Dcache.Raft;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using CacheProto = Dcache.Protocol.Cache;
using Proto = Dcache.Protocol.Admin;

namespace Dcache.Node.Services;

/// <summary>
/// Operators' membership and leadership commands. Only the leader serves them; another node answers
/// FAILED_PRECONDITION with the leader it knows of in the trailers. A change returns once it is committed and
/// applied here, and every refusal of the Raft core becomes a status code with a message an operator can act on.
/// </summary>
public sealed partial class AdminService(RaftDriver driver, AddressBook addresses, NodeOptions options, ClusterCredentials credentials, ILogger<AdminService> logger) : Proto.Admin.AdminBase
{
    public const string LeaderIdTrailer = "dcache-leader-id";
    public const string LeaderAddressTrailer = "dcache-leader-address";

    /// <summary>How long a change may take to commit and apply before the call reports its outcome as unknown.</summary>
    private static readonly TimeSpan ChangeTimeout = TimeSpan.FromSeconds(15);

    /// <summary>How long a moved member's new address may take to answer before the update is refused.</summary>
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(3);

    public override async Task<Proto.MemberListReply> MemberList(Proto.MemberListRequest request, ServerCallContext context)
    {
        // Work on the loop must not throw (it would stop the loop): decide there, refuse here.
        var (leads, leader, members) = await driver.RunOnLoopAsync(raft => (raft.Role == Role.Leader, raft.Leader, raft.Role == Role.Leader ? Describe(raft) : null)).ConfigureAwait(false);
        return leads ? members! : throw NotLeader(leader);
    }

    public override Task<Proto.MembershipReply> MemberAdd(Proto.MemberAddRequest request, ServerCallContext context)
    {
        RequireId(request.Id);
        var address = ParseAddress(request.Id, request.Address);
        return ChangeAsync(new ConfChange(ConfChangeType.AddLearner, request.Id, address), (raft, refuse) =>
        {
            var membership = raft.Membership;
            if (membership.Contains(request.Id))
            {
                refuse(StatusCode.AlreadyExists, $"node {request.Id} is already a {(membership.IsVoter(request.Id) ? "voter" : "learner")} (at {addresses.Find(request.Id) ?? "an unknown address"})");
            }
            else if (OwnerOf(membership, address, except: 0) is var owner and not 0)
            {
                refuse(StatusCode.AlreadyExists, $"address {address} already belongs to node {owner}");
            }
        }, context);
    }

    public override Task<Proto.MembershipReply> MemberPromote(Proto.MemberPromoteRequest request, ServerCallContext context)
    {
        RequireId(request.Id);
        return ChangeAsync(new ConfChange(ConfChangeType.PromoteLearner, request.Id), (raft, refuse) =>
        {
            var membership = raft.Membership;
            if (!membership.Contains(request.Id))
            {
                refuse(StatusCode.NotFound, $"node {request.Id} is not a member");
                return;
            }

            if (membership.IsVoter(request.Id))
            {
                refuse(StatusCode.FailedPrecondition, $"node {request.Id} is already a voter");
                return;
            }

            // A voter that is far behind would hold up commits (and may cost the quorum) until it caught up.
            var status = raft.GetStatus();
            var progress = status.Progress.FirstOrDefault(p => p.Id == request.Id);
            var behind = status.LastIndex - Math.Min(status.LastIndex, progress.Match);
            // (Not RecentActive: the leader clears it at every quorum check, so a healthy learner is briefly "inactive".)
            if (progress.Match == 0)
            {
                // "N behind; the limit is 1000" with N under the limit would leave the operator wondering why.
                refuse(StatusCode.FailedPrecondition,
                    $"node {request.Id} has not caught up: it has received none of the leader's log yet (is it running at {addresses.Find(request.Id) ?? "the address it was added with"}, started with Join=true?); wait and retry");
            }
            else if (behind > options.PromoteMaxLagEntries)
            {
                refuse(StatusCode.FailedPrecondition, string.Create(CultureInfo.InvariantCulture,
                    $"node {request.Id} has not caught up: it holds the log up to index {progress.Match} of the leader's {status.LastIndex} ({behind} behind; the limit is {options.PromoteMaxLagEntries}); wait and retry"));
            }
            else if (!request.Force && QuorumAtRisk(raft, [.. membership.Voters, request.Id]) is var (riskCode, risk))
            {
                refuse(riskCode, $"promoting node {request.Id} {risk}");
            }
        }, context);
    }

    public override Task<Proto.MembershipReply> MemberRemove(Proto.MemberRemoveRequest request, ServerCallContext context)
    {
        RequireId(request.Id);
        return ChangeAsync(new ConfChange(ConfChangeType.Remove, request.Id), (raft, refuse) =>
        {
            if (!raft.Membership.Contains(request.Id))
            {
                refuse(StatusCode.NotFound, $"node {request.Id} is not a member");
            }
            else if (!request.Force && raft.Membership.IsVoter(request.Id) && QuorumAtRisk(raft, [.. raft.Membership.Voters.Where(id => id != request.Id)]) is var (riskCode, risk))
            {
                refuse(riskCode, $"removing node {request.Id} {risk}");
            }
        }, context);
    }

    public override async Task<Proto.MembershipReply> MemberUpdate(Proto.MemberUpdateRequest request, ServerCallContext context)
    {
        RequireId(request.Id);
        var address = ParseAddress(request.Id, request.Address);
        Action<RaftNode, Action<StatusCode, string>> check = (raft, refuse) =>
        {
            var membership = raft.Membership;
            if (!membership.Contains(request.Id))
            {
                refuse(StatusCode.NotFound, $"node {request.Id} is not a member");
            }
            else if (OwnerOf(membership, address, except: request.Id) is var owner and not 0)
            {
                refuse(StatusCode.AlreadyExists, $"address {address} already belongs to node {owner}");
            }
        };

        // Refusals that need no network first (and a follower sends the caller to the leader before it probes).
        var (leads, leader, refusal, acknowledged) = await driver.RunOnLoopAsync(raft =>
        {
            (StatusCode Code, string Reason)? refused = null;
            ulong match = 0;
            if (raft.Role == Role.Leader)
            {
                check(raft, (code, why) => refused = (code, why));
                match = raft.GetStatus().Progress.FirstOrDefault(p => p.Id == request.Id).Match;
            }

            return (raft.Role == Role.Leader, raft.Leader, refused, match);
        }).ConfigureAwait(false);
        if (!leads)
        {
            throw NotLeader(leader);
        }

        if (refusal is { } refused)
        {
            throw new RpcException(new Status(refused.Code, refused.Reason));
        }

        // A mistyped address would leave the member cut off from the cluster: it must answer there as itself, and with
        // the log it acknowledged (a voter that forgot acknowledged entries can help lose committed writes).
        await ProbeAsync(request.Id, address, acknowledged, context.CancellationToken).ConfigureAwait(false);
        return await ChangeAsync(new ConfChange(ConfChangeType.UpdateContext, request.Id, address), check, context).ConfigureAwait(false);
    }

    /// <summary>
    /// Throws unless the node at <paramref name="address"/> answers, with this cluster's credentials, as node
    /// <paramref name="id"/>, holding at least the <paramref name="acknowledged"/> entries the leader saw it hold.
    /// </summary>
    private async Task ProbeAsync(ulong id, string address, ulong acknowledged, CancellationToken cancellationToken)
    {
        using var channel = GrpcChannels.ForNode(address);
        CacheProto.NodeStatus status;
        try
        {
            status = await new CacheProto.Cache.CacheClient(channel)
                .StatusAsync(new CacheProto.StatusRequest(), credentials.ToHeaders(), DateTime.UtcNow.Add(ProbeTimeout), cancellationToken)
                .ConfigureAwait(false);
        }
        catch (RpcException ex) when (ex.StatusCode is StatusCode.PermissionDenied or StatusCode.Unauthenticated)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the node at {address} is not a member of this cluster ({ex.Status.Detail})"));
        }
        catch (RpcException ex) when (!cancellationToken.IsCancellationRequested)
        {
            var why = ex.Status.DebugException?.GetBaseException().Message ?? (ex.Status.Detail.Length > 0 ? ex.Status.Detail : ex.StatusCode.ToString());
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"cannot reach node {id} at {address} from the leader ({why}); start it there first, then retry"));
        }

        if (status.NodeId != id)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"the node at {address} is node {status.NodeId}, not node {id}"));
        }

        if (status.LastIndex < acknowledged)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition,
                $"node {id} at {address} holds log entries up to {status.LastIndex}, but had acknowledged up to {acknowledged}: " +
                "its data is not what it was (a wiped or replaced data directory); replace the member instead (member remove, then add it fresh)"));
        }
    }

    public override async Task<Proto.LeaderTransferReply> LeaderTransfer(Proto.LeaderTransferRequest request, ServerCallContext context)
    {
        var self = driver.NodeId;
        var (isLeader, membership, leader) = await driver.RunOnLoopAsync(raft => (raft.Role == Role.Leader, raft.Membership, raft.Leader)).ConfigureAwait(false);
        if (!isLeader)
        {
            throw NotLeader(leader);
        }

        if (request.TargetId == self)
        {
            return new Proto.LeaderTransferReply { PreviousLeaderId = self, LeaderId = self };
        }

        if (request.TargetId != 0 && !membership.IsVoter(request.TargetId))
        {
            throw new RpcException(new Status(membership.Contains(request.TargetId) ? StatusCode.FailedPrecondition : StatusCode.NotFound,
                membership.Contains(request.TargetId) ? $"node {request.TargetId} is a learner; only a voter can lead" : $"node {request.TargetId} is not a member"));
        }

        var target = await driver.TransferLeadershipAsync(request.TargetId).ConfigureAwait(false);
        if (target == 0)
        {
            throw new RpcException(new Status(StatusCode.FailedPrecondition, "no other voter can take over leadership (or this node stopped leading meanwhile)"));
        }

        Log.TransferStarted(logger, target);
        // The target needs its log caught up, then one election round; the core gives up after an election timeout.
        var moved = await driver.WaitForStatusAsync(s => s.Role != Role.Leader && s.LeaderId != 0, options.ElectionTimeout * 3, context.CancellationToken).ConfigureAwait(false);
        var now = driver.Status;
        if (!moved)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, now.Role == Role.Leader
                ? $"node {target} did not take over within an election timeout; node {self} still leads"
                : "leadership left this node but no new leader is known yet; check `dcachectl status`"));
        }

        return new Proto.LeaderTransferReply { PreviousLeaderId = self, LeaderId = now.LeaderId };
    }

    /// <summary>
    /// Why a membership of <paramref name="votersAfter"/> could commit nothing now (etcd's strict reconfiguration
    /// check): fewer of its voters than a quorum answered the leader within the last election timeout. Null when
    /// enough did. A typo that removes a live voter while another is down, or a promotion of a learner that has since
    /// died, would otherwise leave the cluster without a quorum, and report success. A leader that took over less than
    /// an election timeout ago and has not heard from a voter yet cannot tell: ABORTED, which dcachectl retries.
    /// </summary>
    private (StatusCode Code, string Reason)? QuorumAtRisk(RaftNode raft, IReadOnlyCollection<ulong> votersAfter)
    {
        if (votersAfter.Count == 0)
        {
            return null; // the core refuses to remove the last voter, in its own words
        }

        var progress = raft.GetStatus().Progress.ToDictionary(p => p.Id);
        var silent = votersAfter.Where(id => id != raft.Id && !AnsweredLately(progress, id)).Order().ToList();
        var quorum = (votersAfter.Count / 2) + 1;
        if (votersAfter.Count - silent.Count >= quorum)
        {
            return null;
        }

        var notYetHeard = silent.Where(id => progress.TryGetValue(id, out var p) && !p.HeardThisTerm && p.TicksSinceHeard <= options.ElectionTicks).ToList();
        if (notYetHeard.Count > 0)
        {
            return (StatusCode.Aborted, $"cannot be checked yet: this leader took over moments ago and has not heard from node(s) {string.Join(", ", notYetHeard)}; retry");
        }

        return (StatusCode.FailedPrecondition, string.Create(CultureInfo.InvariantCulture,
            $"would leave voters {string.Join(", ", votersAfter.Order())}, of which {string.Join(", ", silent)} did not answer the leader within the last election timeout: fewer than the {quorum} needed to commit anything. Bring them back first, or pass --force yes to change it anyway"));
    }

    /// <summary>Whether <paramref name="id"/> answered this leader within the last election timeout.</summary>
    private bool AnsweredLately(Dictionary<ulong, PeerProgress> progress, ulong id) =>
        progress.TryGetValue(id, out var p) && p.HeardThisTerm && p.TicksSinceHeard <= options.ElectionTicks;

    private async Task<Proto.MembershipReply> ChangeAsync(ConfChange change, Action<RaftNode, Action<StatusCode, string>> check, ServerCallContext context)
    {
        var code = StatusCode.FailedPrecondition;
        var (proposal, refusal, applied) = await driver.ProposeConfChangeAsync(change, raft =>
        {
            string? reason = null;
            check(raft, (refusedWith, why) => (code, reason) = (refusedWith, why));
            return reason;
        }).ConfigureAwait(false);

        if (applied is null)
        {
            throw proposal.Status switch
            {
                ProposeStatus.NotLeader => NotLeader(proposal.LeaderHint),
                ProposeStatus.TransferInProgress => new RpcException(new Status(StatusCode.Unavailable, $"leadership is being handed over to node {proposal.LeaderHint}; retry there")),
                ProposeStatus.ConfChangePending => new RpcException(new Status(StatusCode.Aborted, $"another membership change is in progress ({proposal.Reason}); retry once it is applied")),
                _ when refusal is not null && proposal.Status == ProposeStatus.InvalidConfChange => new RpcException(new Status(code, refusal)),
                _ => new RpcException(new Status(StatusCode.FailedPrecondition, $"refused: {proposal.Status} {proposal.Reason}".TrimEnd())),
            };
        }

        Log.ChangeProposed(logger, change.Type, change.NodeId, proposal.Index);
        bool took;
        try
        {
            took = await applied.WaitAsync(ChangeTimeout, context.CancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, string.Create(CultureInfo.InvariantCulture,
                $"outcome unknown: the change was proposed at index {proposal.Index} but not seen applied within {ChangeTimeout.TotalSeconds:F0} s (is a quorum of voters up?); check `dcachectl member list`")));
        }
        catch (InvalidOperationException ex)
        {
            throw new RpcException(new Status(StatusCode.Unavailable, $"outcome unknown: {ex.Message}"));
        }

        if (!took)
        {
            throw new RpcException(new Status(StatusCode.Aborted, $"not applied: leadership changed and another entry took index {proposal.Index}; retry"));
        }

        Proto.MemberListReply members;
        try
        {
            members = await driver.RunOnLoopAsync(Describe).ConfigureAwait(false);
        }
        catch (NodeStoppedException)
        {
            // The change is made; only the member list went with the loop. UNAVAILABLE here would tell the operator it
            // failed, and a retry would then be refused as already in effect. An empty list with no leader, rather than
            // none: a dcachectl older than this answer prints it as a list from a leader that stepped down.
            members = new Proto.MemberListReply();
        }

        return new Proto.MembershipReply { Index = proposal.Index, Members = members };
    }

    private Proto.MemberListReply Describe(RaftNode raft)
    {
        var status = raft.GetStatus();
        var reply = new Proto.MemberListReply { LeaderId = status.Leader, Term = status.Term, CommitIndex = status.Commit, LastIndex = status.LastIndex };
        var progress = status.Progress.ToDictionary(p => p.Id);
        foreach (var id in status.Membership.All.Order())
        {
            var known = progress.TryGetValue(id, out var p);
            reply.Members.Add(new Proto.MemberInfo
            {
                Id = id,
                Address = addresses.Find(id) ?? "",
                Voter = status.Membership.IsVoter(id),
                MatchIndex = id == raft.Id ? status.LastIndex : known ? p.Match : 0,
                RecentlyActive = id == raft.Id || AnsweredLately(progress, id),
                MovedTo = status.Membership.UpdatedContexts.Contains(id) ? status.Membership.ContextOf(id) ?? "" : "",
                RecordedAddress = status.Membership.ContextOf(id) ?? "",
            });
        }

        return reply;
    }

    /// <summary>
    /// The member other than <paramref name="except"/> at <paramref name="address"/> however either is written (0:
    /// none), where this node dials it or where the log records it (a proxy in this node's InitialCluster may stand
    /// between): the node there would refuse all traffic meant for a second member, which could then never be reached.
    /// </summary>
    private ulong OwnerOf(Membership membership, string address, ulong except) =>
        membership.All.FirstOrDefault(id => id != except
            && ((addresses.Find(id) is { } dialled && ClusterMembers.SameNode(dialled, address))
                || (membership.ContextOf(id) is { } recorded && ClusterMembers.SameNode(recorded, address))));

    private static string ParseAddress(ulong id, string address)
    {
        try
        {
            return NodeOptions.ParseMembers($"{id}={address}", requirePort: true)[id];
        }
        catch (FormatException ex)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, $"invalid address: {ex.Message}"));
        }
    }

    private static void RequireId(ulong id)
    {
        if (id == 0)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "a node id is a positive number"));
        }
    }

    private RpcException NotLeader(ulong leader)
    {
        // The leader id trailer marks the refusal as "not the leader" (0: none known); the address is where to go.
        var trailers = new Metadata { { LeaderIdTrailer, leader.ToString(CultureInfo.InvariantCulture) } };
        if (addresses.Find(leader) is { } address)
        {
            trailers.Add(LeaderAddressTrailer, address);
        }

        return new RpcException(new Status(StatusCode.FailedPrecondition,
            leader == 0 ? $"node {driver.NodeId} does not lead and knows no leader; retry shortly" : $"node {driver.NodeId} does not lead; node {leader} does"), trailers);
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Information, Message = "Operator membership change proposed: {Change} node {Node} at index {Index}")]
        public static partial void ChangeProposed(ILogger logger, ConfChangeType change, ulong node, ulong index);

        [LoggerMessage(Level = LogLevel.Information, Message = "Operator leadership transfer to node {Target} started")]
        public static partial void TransferStarted(ILogger logger, ulong target);
    }
}
