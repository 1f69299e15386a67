using System.Globalization;
using Dcache.Protocol.Cache;
using Grpc.Core;

namespace Dcache.Ctl;

/// <summary>
/// `dcachectl status`: every node's view of the cluster, one line each: the endpoints given and every member their
/// membership names (so one reachable endpoint is enough to see the whole cluster, and a member nobody listed shows).
/// </summary>
internal static class StatusCommand
{
    // A node's answer includes connecting to it (and, for `localhost`, trying ::1 first) from a process that has just
    // started: 3 s ran out on a machine with a load average of 65 while the node was healthy. A node that is down is
    // refused at once; only a hung or paused one waits this long.
    private static readonly TimeSpan AnswerPatience = TimeSpan.FromSeconds(6);

    public static async Task<int> RunAsync(Options options)
    {
        var cluster = new ClusterConnection(options);
        var endpoints = cluster.Endpoints;
        var headers = cluster.Headers;
        Console.WriteLine($"{"ENDPOINT",-26} {"ID",3} {"ROLE",-12} {"TERM",6} {"LEADER",6} {"COMMIT",9} {"APPLIED",9} {"LAG",6}  {"VOTERS",-14} LEARNERS");
        var statuses = new List<(string Endpoint, NodeStatus? Status, string? Error)>();
        // The endpoints given, then every member they name that was not among them: one endpoint shows the cluster.
        // A member is skipped once a node with its id answered (the operator may have spelt its address otherwise).
        // Each round asks its nodes at once: one after another, a paused node held up the rest by its whole patience,
        // and the indexes of nodes asked later were later ones.
        var round = endpoints.ToList();
        var asked = new HashSet<string>(endpoints.Select(Normalize), StringComparer.OrdinalIgnoreCase);
        var answered = new HashSet<ulong>();
        while (round.Count > 0)
        {
            var answers = await Task.WhenAll(round.Select(next => AskAsync(next, headers))).ConfigureAwait(false);
            statuses.AddRange(answers);
            answered.UnionWith(answers.Where(a => a.Status is not null).Select(a => a.Status!.NodeId));
            round = answers
                .Where(a => a.Status is not null)
                .SelectMany(a => a.Status!.Members)
                .Where(m => m.Address.Length > 0 && !answered.Contains(m.Id))
                .DistinctBy(m => m.Id)
                .Where(m => asked.Add(Normalize(m.Address)))
                .Select(m => m.Address)
                .ToList();
        }

        var commit = statuses.Where(s => s.Status is not null).Select(s => s.Status!.CommitIndex).DefaultIfEmpty(0UL).Max();
        foreach (var (endpoint, status, error) in statuses)
        {
            if (status is null)
            {
                Console.WriteLine($"{endpoint,-26} {"-",3} {"DOWN",-12} {error}");
                continue;
            }

            var voters = string.Join(",", status.Members.Where(m => m.Voter).Select(m => ClusterConnection.Text(m.Id)));
            var learners = string.Join(",", status.Members.Where(m => !m.Voter).Select(m => ClusterConnection.Text(m.Id)));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{endpoint,-26} {status.NodeId,3} {status.Role,-12} {status.Term,6} {status.LeaderId,6} {status.CommitIndex,9} {status.AppliedIndex,9} {commit - Math.Min(commit, status.AppliedIndex),6}  {(voters.Length == 0 ? "-" : voters),-14} {(learners.Length == 0 ? "-" : learners)}"));
        }

        return statuses.All(s => s.Status is not null) ? 0 : 1;
    }

    private static async Task<(string Endpoint, NodeStatus? Status, string? Error)> AskAsync(string endpoint, Metadata headers)
    {
        try
        {
            using var channel = ClusterConnection.Open(endpoint);
            var status = await new Protocol.Cache.Cache.CacheClient(channel).StatusAsync(new StatusRequest(), headers, DateTime.UtcNow.Add(AnswerPatience)).ConfigureAwait(false);
            return (endpoint, status, null);
        }
        catch (RpcException ex)
        {
            return (endpoint, null, ClusterConnection.Describe(ex));
        }
        catch (Exception ex) when (ex is UriFormatException or ArgumentException)
        {
            // A malformed endpoint, given or named in a membership.
            return (endpoint, null, ex.Message);
        }
    }

    private static string Normalize(string endpoint) => endpoint.Trim().TrimEnd('/');
}
