using System.Globalization;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dcache.Ctl;

/// <summary>`dcachectl status`: every node's view of the cluster, one line each.</summary>
internal static class StatusCommand
{
    public static async Task<int> RunAsync(Options options)
    {
        var endpoints = options.Endpoints;
        var headers = new Metadata { { "dcache-cluster-id", options.ClusterId }, { "dcache-secret", options.Secret } };
        Console.WriteLine($"{"ENDPOINT",-26} {"ID",3} {"ROLE",-12} {"TERM",6} {"LEADER",6} {"COMMIT",9} {"APPLIED",9} {"LAG",6}  MEMBERS");
        var failures = 0;
        var statuses = new List<(string Endpoint, NodeStatus? Status, string? Error)>();
        foreach (var endpoint in endpoints)
        {
            try
            {
                using var channel = GrpcChannel.ForAddress(endpoint);
                var status = await new Protocol.Cache.Cache.CacheClient(channel).StatusAsync(new StatusRequest(), headers, DateTime.UtcNow.AddSeconds(3)).ConfigureAwait(false);
                statuses.Add((endpoint, status, null));
            }
            catch (RpcException ex)
            {
                statuses.Add((endpoint, null, ex.Status.StatusCode == StatusCode.Unavailable ? "unreachable" : ex.Status.Detail));
                failures++;
            }
            catch (UriFormatException ex)
            {
                statuses.Add((endpoint, null, ex.Message));
                failures++;
            }
        }

        var commit = statuses.Where(s => s.Status is not null).Select(s => s.Status!.CommitIndex).DefaultIfEmpty(0UL).Max();
        foreach (var (endpoint, status, error) in statuses)
        {
            if (status is null)
            {
                Console.WriteLine($"{endpoint,-26} {"-",3} {"DOWN",-12} {error}");
                continue;
            }

            var members = string.Join(",", status.Members.Select(m => m.Voter ? m.Id.ToString(CultureInfo.InvariantCulture) : $"{m.Id}(learner)"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{endpoint,-26} {status.NodeId,3} {status.Role,-12} {status.Term,6} {status.LeaderId,6} {status.CommitIndex,9} {status.AppliedIndex,9} {commit - Math.Min(commit, status.AppliedIndex),6}  {members}"));
        }

        return failures == 0 ? 0 : 1;
    }
}
