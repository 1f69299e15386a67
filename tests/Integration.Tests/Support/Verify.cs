using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Integration.Tests.Support;

internal static class Verify
{
    /// <summary>Reads every key with linearizable MGETs on <paramref name="node"/> and returns the keys whose value differs.</summary>
    public static async Task<List<string>> MissingAsync(LocalCluster cluster, ulong node, IReadOnlyDictionary<string, string> expected)
    {
        var missing = new List<string>();
        foreach (var batch in expected.Keys.Order(StringComparer.Ordinal).Chunk(500))
        {
            var mget = new MGetRequest();
            mget.Keys.AddRange(batch.Select(ByteString.CopyFromUtf8));
            // A read that met an election (a cluster just started, a loaded machine) is refused as Unavailable: retried.
            var deadline = DateTime.UtcNow.AddSeconds(30);
            var reply = await cluster.ExecuteAsync(node, new Command { Id = 1, Mget = mget });
            while (reply.Failure is { Kind: FailureKind.Unavailable } && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
                reply = await cluster.ExecuteAsync(node, new Command { Id = 1, Mget = mget });
            }

            if (reply.ResultCase != Reply.ResultOneofCase.Array)
            {
                throw new InvalidOperationException($"MGET on node {node} failed: {reply}");
            }

            for (var i = 0; i < batch.Length; i++)
            {
                var item = reply.Array.Items[i];
                if (item.ResultCase != Reply.ResultOneofCase.Bulk || item.Bulk.ToStringUtf8() != expected[batch[i]])
                {
                    missing.Add(batch[i]);
                }
            }
        }

        return missing;
    }

    public static async Task CaughtUpAsync(LocalCluster cluster, TimeSpan timeout)
    {
        await Eventually.WaitAsync(async () =>
        {
            var statuses = await Task.WhenAll(cluster.Nodes.Values.Where(n => n.IsRunning).Select(n => cluster.StatusAsync(n.Id)));
            var commit = statuses.Max(s => s.CommitIndex);
            return statuses.All(s => s.AppliedIndex >= commit);
        }, timeout, "every running node to apply the leader's commit index");
    }

    /// <summary>Waits until every running node reports the same state digest at the same applied index.</summary>
    public static async Task<string> SameDigestAsync(LocalCluster cluster, TimeSpan timeout)
    {
        var digest = "";
        await Eventually.WaitAsync(async () =>
        {
            var statuses = await Task.WhenAll(cluster.Nodes.Values.Where(n => n.IsRunning).Select(n => cluster.StatusAsync(n.Id, digest: true)));
            if (statuses.Select(s => s.DigestIndex).Distinct().Count() != 1)
            {
                return false;
            }

            var digests = statuses.Select(s => s.StateDigest).Distinct().ToList();
            if (digests.Count != 1)
            {
                throw new InvalidOperationException($"replicas disagree at index {statuses[0].DigestIndex}: {string.Join(", ", statuses.Select(s => $"node {s.NodeId}={s.StateDigest}"))}");
            }

            digest = digests[0];
            return true;
        }, timeout, "every replica to reach the same applied index with its digest");
        return digest;
    }
}
