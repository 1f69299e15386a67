using System.Globalization;
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
                        var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberAddAsync(new MemberAddRequest { Id = id, Address = address }, headers, Deadline).ResponseAsync).ConfigureAwait(false);
                        return Report(reply, $"Added node {id} ({address}) as a learner");
                    }

                case "promote":
                    {
                        var id = options.GetId("id");
                        var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberPromoteAsync(new MemberPromoteRequest { Id = id }, headers, Deadline).ResponseAsync).ConfigureAwait(false);
                        return Report(reply, $"Promoted node {id} to voter");
                    }

                case "remove":
                    {
                        var id = options.GetId("id");
                        var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberRemoveAsync(new MemberRemoveRequest { Id = id }, headers, Deadline).ResponseAsync).ConfigureAwait(false);
                        return Report(reply, $"Removed node {id}");
                    }

                case "update":
                    {
                        var id = options.GetId("id");
                        var address = options.Require("address");
                        var reply = await cluster.OnLeaderAsync((channel, headers) => new Admin.AdminClient(channel).MemberUpdateAsync(new MemberUpdateRequest { Id = id, Address = address }, headers, Deadline).ResponseAsync).ConfigureAwait(false);
                        return Report(reply, $"Moved node {id} to {address}");
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

    private static int Report(MembershipReply? reply, string done)
    {
        if (reply is null)
        {
            return 1;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{done} (applied at index {reply.Index})."));
        Print(reply.Members);
        return 0;
    }

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
