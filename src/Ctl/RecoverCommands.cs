using System.Globalization;
using Dcache.Raft;
using Dcache.Storage;

namespace Dcache.Ctl;

/// <summary>
/// `dcachectl recover inspect|force-new-cluster`: bringing a cluster that lost a majority of its voters back into
/// service from one survivor (etcd's --force-new-cluster is the model). Offline: the node must be stopped.
/// </summary>
internal static class RecoverCommands
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (args is not [var sub, .. var rest])
        {
            Console.Error.WriteLine("dcachectl recover: expected 'inspect --data DIR' or 'force-new-cluster --data DIR --cluster-id NEWID'");
            return 2;
        }

        return await CommandFailures.ReportAsync($"recover {sub}", () =>
        {
            var options = Options.Parse(rest, sub == "force-new-cluster" ? ["data", "cluster-id"] : ["data"]);
            return Task.FromResult(sub switch
            {
                "inspect" => Inspect(options),
                "force-new-cluster" => ForceNewCluster(options),
                _ => throw new FormatException($"unknown recover command '{sub}' (inspect or force-new-cluster)"),
            });
        }).ConfigureAwait(false);
    }

    /// <summary>Prints what an operator needs to pick the survivor to recover from.</summary>
    private static int Inspect(Options options)
    {
        using var storage = OpenStopped(options.Require("data"));
        var log = storage.RaftLog;
        var hardState = log.HardState;
        var commit = Math.Max(hardState.Commit, log.Snapshot.Index);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            node id:      {storage.Metadata.NodeId}
            cluster id:   {storage.Metadata.ClusterId}
            founded from: {storage.Metadata.FoundingLog ?? "not recorded (joined, or founded by an older build)"}
            last index:   {log.LastIndex}
            last term:    {LastTerm(log)}
            commit index: {commit}
            term:         {hardState.Term} (voted for {hardState.Vote})
            snapshot:     index {log.Snapshot.Index} (term {log.Snapshot.Term})
            membership:   {MembershipAt(log, commit)} (as of the commit index)
            """));
        return 0;
    }

    /// <summary>
    /// Rewrites a survivor's data so it restarts as the only voter of a new cluster: entries after its commit index are
    /// discarded (as etcd does: they are not known to be committed), then a no-op and the removal of every other member
    /// are appended in a new term and committed, and the data is moved to the new cluster id so that the lost members,
    /// should they come back, are refused.
    /// </summary>
    private static int ForceNewCluster(Options options)
    {
        var clusterId = options.Require("cluster-id");
        using var storage = OpenStopped(options.Require("data"));
        var self = storage.Metadata.NodeId!.Value;
        var oldCluster = storage.Metadata.ClusterId;
        if (clusterId == oldCluster)
        {
            Console.Error.WriteLine($"dcachectl recover force-new-cluster: --cluster-id must name a new cluster, not the current one ({clusterId}), so that the lost members are refused should they return (if an earlier run already moved this node into {clusterId}, the recovery is done: start the node)");
            return 1;
        }

        var log = storage.RaftLog;
        var hardState = log.HardState;
        var commit = Math.Max(hardState.Commit, log.Snapshot.Index);
        var lastIndex = log.LastIndex;
        var membership = MembershipAt(log, commit);
        if (!membership.Contains(self))
        {
            Console.Error.WriteLine($"dcachectl recover force-new-cluster: node {self} is not a member as of its commit index ({membership}); recover from another survivor");
            return 1;
        }

        var term = hardState.Term + 1;
        var changes = new List<ConfChange>();
        if (membership.IsLearner(self))
        {
            changes.Add(new ConfChange(ConfChangeType.PromoteLearner, self));
        }

        changes.AddRange(membership.All.Where(id => id != self).Order().Select(id => new ConfChange(ConfChangeType.Remove, id)));
        var entries = new List<Entry> { new(commit + 1, term, EntryType.Normal, ReadOnlyMemory<byte>.Empty) };
        var after = membership;
        foreach (var change in changes)
        {
            after = after.Apply(change);
            entries.Add(new Entry(commit + (ulong)entries.Count + 1, term, EntryType.ConfChange, change.Encode()));
        }

        // One durable commit: the new entries supersede everything after the commit index, and are committed.
        log.Save(new HardState(term, 0, commit + (ulong)entries.Count), entries, null);
        // Unique to this recovery: a second survivor recovered apart into the same cluster id is refused by this one.
        // Recorded before the cluster id moves: a run cut short between the two is run again (its id check passes).
        storage.Metadata.RecordFoundingLog(FoundingLog.OfRecovery());
        storage.Metadata.ReplaceClusterId(clusterId);

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            node {self} now forms cluster {clusterId} alone (was cluster {oldCluster}, {membership}).
            kept:      every committed entry up to index {commit}
            discarded: {lastIndex - commit} entries after the commit index (not known to be committed)
            appended:  at term {term}, entries {commit + 1}..{commit + (ulong)entries.Count}: a no-op, then {string.Join(", ", changes.Select(c => $"{c.Type} {c.NodeId}"))}
            next:      start node {self} with --Dcache:Node:ClusterId={clusterId} (and the gateway with the new cluster id), then add members back
            """));
        return 0;
    }

    /// <summary>Opens a stopped node's data directory as the node would (a torn tail after the last commit is dropped).</summary>
    private static NodeStorage OpenStopped(string directory)
    {
        var full = Path.GetFullPath(directory);
        if (!File.Exists(Path.Combine(full, MetadataStore.FileName)))
        {
            throw new InvalidOperationException($"{full} holds no node data (no {MetadataStore.FileName})");
        }

        return NodeStorage.OpenExisting(new StorageOptions { DataDirectory = full });
    }

    private static ulong LastTerm(FasterRaftStorage log) => log.TryGetTerm(log.LastIndex, out var term) == LogReadStatus.Ok ? term : log.Snapshot.Term;

    /// <summary>The membership in effect at <paramref name="index"/>: the log's snapshot's, then every membership change up to it.</summary>
    private static Membership MembershipAt(FasterRaftStorage log, ulong index)
    {
        var membership = log.Snapshot.Membership;
        var entries = new List<Entry>();
        for (var next = log.Snapshot.Index + 1; next <= index; next = entries[^1].Index + 1)
        {
            entries.Clear();
            var status = log.TryGetEntries(next, index + 1, 4 << 20, entries);
            if (status != LogReadStatus.Ok)
            {
                throw new InvalidOperationException($"entries {next}..{index} cannot be read from the log ({status})");
            }

            foreach (var entry in entries.Where(e => e.Type == EntryType.ConfChange))
            {
                try
                {
                    membership = membership.Apply(ConfChange.Decode(entry.Data.Span));
                }
                catch (FormatException ex)
                {
                    // The log's fault or a newer build's entry, not the operator's usage: exit 1, not 2.
                    throw new InvalidOperationException($"the membership change at index {entry.Index} cannot be read ({ex.Message}); is this dcachectl older than the node that wrote it?", ex);
                }
            }
        }

        return membership;
    }
}
