using System.Globalization;
using Dcache.Protocol;
using Dcache.Protocol.Admin;
using Grpc.Core;

namespace Dcache.Ctl;

/// <summary>
/// `dcachectl member list|add|promote|remove|update` and `dcachectl leader transfer`: each runs on the leader (found by
/// following the nodes' hints) and returns once the change is committed and applied.
/// </summary>
internal static class MemberCommands
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How long a membership change keeps trying to make or find it in effect: a leader election and a node's own 15 s wait for an apply fit.</summary>
    private static readonly TimeSpan ChangePatience = TimeSpan.FromSeconds(45);

    /// <summary>A leader election, or the apply of a pending change, normally takes well under this.</summary>
    private static readonly TimeSpan RetryPause = TimeSpan.FromSeconds(1);

    private const int MaxChangeAttempts = 30;

    public static async Task<int> RunMemberAsync(string verb, Options options)
    {
        var cluster = new ClusterConnection(options);
        try
        {
            switch (verb)
            {
                case "list":
                    {
                        var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberListAsync(new MemberListRequest(), headers, Deadline).ResponseAsync).ConfigureAwait(false);
                        if (reply is null)
                        {
                            return 1;
                        }

                        Print(reply);
                        return 0;
                    }

                case "add":
                    {
                        var id = options.GetId("id");
                        var address = options.Require("address");
                        return await ChangeAsync(cluster, verb, (admin, headers, deadline) => admin.MemberAddAsync(new MemberAddRequest { Id = id, Address = address }, headers, deadline),
                            members => MemberStates.LearnerAt(members, id, address),
                            $"Added node {id} ({address}) as a learner").ConfigureAwait(false);
                    }

                case "promote":
                    {
                        var id = options.GetId("id");
                        var force = options.GetYes("force");
                        return await ChangeAsync(cluster, verb, (admin, headers, deadline) => admin.MemberPromoteAsync(new MemberPromoteRequest { Id = id, Force = force }, headers, deadline),
                            members => MemberStates.Voter(members, id),
                            $"Promoted node {id} to voter").ConfigureAwait(false);
                    }

                case "remove":
                    {
                        var id = options.GetId("id");
                        var force = options.GetYes("force");
                        return await ChangeAsync(cluster, verb, (admin, headers, deadline) => admin.MemberRemoveAsync(new MemberRemoveRequest { Id = id, Force = force }, headers, deadline),
                            members => MemberStates.NotMember(members, id),
                            $"Removed node {id}").ConfigureAwait(false);
                    }

                case "update":
                    {
                        var id = options.GetId("id");
                        var address = options.Require("address");
                        return await ChangeAsync(cluster, verb, (admin, headers, deadline) => admin.MemberUpdateAsync(new MemberUpdateRequest { Id = id, Address = address }, headers, deadline),
                            members => MemberStates.MovedTo(members, id, address),
                            $"Moved node {id} to {address}").ConfigureAwait(false);
                    }

                default:
                    Console.Error.WriteLine($"dcachectl: unknown member command '{verb}' (list, add, promote, remove, update)");
                    return 2;
            }
        }
        catch (RpcException ex)
        {
            Console.Error.WriteLine($"dcachectl member {verb}: {ClusterConnection.Describe(ex)}");
            return 1;
        }
    }

    public static async Task<int> RunLeaderAsync(string verb, Options options)
    {
        if (verb != "transfer")
        {
            Console.Error.WriteLine($"dcachectl: unknown leader command '{verb}' (transfer)");
            return 2;
        }

        var target = options.Has("to") ? options.GetId("to") : 0;
        var cluster = new ClusterConnection(options);
        try
        {
            var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).LeaderTransferAsync(new LeaderTransferRequest { TargetId = target }, headers, Deadline).ResponseAsync).ConfigureAwait(false);
            if (reply is null)
            {
                return 1;
            }

            Console.WriteLine(reply.PreviousLeaderId == reply.LeaderId
                ? $"Node {reply.LeaderId} already leads."
                : $"Leadership moved from node {reply.PreviousLeaderId} to node {reply.LeaderId}.");
            return 0;
        }
        catch (RpcException ex)
        {
            Console.Error.WriteLine($"dcachectl leader transfer: {ClusterConnection.Describe(ex)}");
            return 1;
        }
    }

    private static DateTime Deadline => DateTime.UtcNow.Add(CallTimeout);

    /// <summary>
    /// Runs a membership change on the leader and reports whether it was made. A call whose outcome was unknown (its
    /// leader lost leadership or stopped after proposing it) may have made the change, and the next leader then refuses
    /// it as a duplicate: after such a call the leader's membership decides, and the state asked for
    /// (<paramref name="inEffect"/> says what it found) is success, "already in effect". A change refused while another
    /// is pending, or whose outcome is unknown, is tried again until <see cref="ChangePatience"/> runs out; any other
    /// refusal is the answer.
    /// </summary>
    private static async Task<int> ChangeAsync(ClusterConnection cluster, string verb, Func<Admin.AdminClient, Metadata, DateTime, AsyncUnaryCall<MembershipReply>> change,
        Func<MemberListReply, string?> inEffect, string done)
    {
        var patience = DateTime.UtcNow.Add(ChangePatience);
        var outcomeUnknown = false;
        for (var attempt = 1; ; attempt++)
        {
            Action reportFailure;
            bool worthRetrying;
            var answer = await cluster.TryOnLeaderAsync((channel, headers) => change(new Admin.AdminClient(channel), headers, CallDeadline(patience)).ResponseAsync).ConfigureAwait(false);
            if (answer.Reply is { } reply)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{done} (applied at index {reply.Index})."));
                if (reply.Members is { Members.Count: > 0 } members)
                {
                    Print(members);
                }
                else
                {
                    Console.WriteLine("The leader stopped as it applied the change; `dcachectl member list` shows the members.");
                }

                return 0;
            }

            outcomeUnknown |= answer.OutcomeUnknown;
            if (answer.Refusal is { } refusal)
            {
                reportFailure = () => Console.Error.WriteLine($"dcachectl member {verb}: {ClusterConnection.Describe(refusal)}");
                // Aborted: another change was pending, or a new leader's entry took the change's place; neither made it.
                worthRetrying = refusal.StatusCode == StatusCode.Aborted || ClusterConnection.IsOutcomeUnknown(refusal);
            }
            else
            {
                reportFailure = () => answer.PrintFailure("no leader could be reached");
                worthRetrying = outcomeUnknown;
            }

            // Only a call whose outcome was unknown may have made the change that a later attempt was refused as a
            // duplicate of. Without one, the leader's refusal is the answer: a membership that looks as asked does not
            // mean the change was made (an update to the address a member already has still pins that address; the
            // leader may have refused it during a rolling upgrade).
            if (outcomeUnknown)
            {
                var members = await cluster.TryOnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberListAsync(new MemberListRequest(), headers, CallDeadline(patience)).ResponseAsync).ConfigureAwait(false);
                if (members.Reply is { } list && inEffect(list) is { } found)
                {
                    Console.WriteLine($"{done}: already in effect ({found}, after an attempt whose outcome was unknown).");
                    Print(list);
                    return 0;
                }

                // Unread (a leader just elected, say), the membership may yet show a refusal to be the change made.
                worthRetrying |= members.Reply is null;
            }

            if (!worthRetrying || attempt >= MaxChangeAttempts || DateTime.UtcNow.Add(RetryPause) >= patience)
            {
                reportFailure();
                return 1;
            }

            await Task.Delay(RetryPause).ConfigureAwait(false);
        }
    }

    private static DateTime CallDeadline(DateTime patience) => DateTime.UtcNow.Add(CallTimeout) < patience ? DateTime.UtcNow.Add(CallTimeout) : patience;

    private static void Print(MemberListReply list)
    {
        // Only a leader tracks its members' progress: a leader that has just removed itself no longer does.
        var progressKnown = list.LeaderId != 0;
        Console.WriteLine($"{"ID",4}  {"ROLE",-8} {"ADDRESS",-28} {"MATCH",9} {"LAG",7}  ACTIVE");
        foreach (var member in list.Members)
        {
            var role = member.Id == list.LeaderId ? "leader" : member.Voter ? "voter" : "learner";
            var lag = list.LastIndex - Math.Min(list.LastIndex, member.MatchIndex);
            Console.WriteLine(progressKnown
                ? string.Create(CultureInfo.InvariantCulture, $"{member.Id,4}  {role,-8} {member.Address,-28} {member.MatchIndex,9} {lag,7}  {(member.RecentlyActive ? "yes" : "no")}")
                : $"{member.Id,4}  {role,-8} {member.Address,-28} {"-",9} {"-",7}  -");
        }

        if (!progressKnown)
        {
            Console.WriteLine("(the node that answered has just stepped down as leader; `dcachectl member list` shows the new leader's view)");
        }
    }
}
