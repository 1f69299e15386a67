using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Cluster;

/// <summary>How a read is served.</summary>
public enum ReadMode
{
    /// <summary>Linearizable (ReadIndex), spread over all nodes.</summary>
    Linearizable,
    /// <summary>A replica's local state, possibly stale (the connection sent READONLY).</summary>
    Local,
}

/// <summary>
/// The gateway's view of the cluster: run commands and get their replies. Implementations route writes to the leader,
/// spread reads, batch concurrent commands over a few streams, and retry what is safe to retry. A write must carry its
/// session (client id, sequence) so that a retry applies once. A reply is either the command's result or a Failure
/// whose kind says whether the command may have applied (OUTCOME_UNKNOWN) or certainly did not.
/// </summary>
public interface ICacheCluster
{
    Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken);

    /// <summary>
    /// Starts commands that may run at the same time (one wave of a client's pipeline) and completes each call with its
    /// reply. The list is not kept after the return. The cluster client runs them as one batch, so that a pipeline pays
    /// for one resilience pipeline run, not one per command; the default starts them one by one.
    /// </summary>
    void ExecuteAll(IReadOnlyList<ClusterCall> calls, CancellationToken cancellationToken)
    {
        foreach (var call in calls)
        {
            call.CompleteWith(ExecuteAsync(call.Command, call.Mode, cancellationToken));
        }
    }

    /// <summary>What INFO reports about the cluster: known leader, node count, and so on.</summary>
    ClusterView View { get; }
}

/// <param name="Nodes">Members as the leader's membership last said (nodes removed since are not counted).</param>
/// <param name="HealthyNodes">Of those, the ones whose circuit breaker is not open.</param>
public sealed record ClusterView(ulong LeaderId, string? LeaderAddress, int Nodes, int HealthyNodes);

/// <summary>One command handed to <see cref="ICacheCluster.ExecuteAll"/>, and its reply to come.</summary>
public sealed class ClusterCall(Command command, ReadMode mode)
{
    // Continuations run where the reply is completed: the cluster client completes calls after a hop off its stream
    // reader, and the only waiter is the client connection's loop, which writes the reply and moves on.
    private readonly TaskCompletionSource<Reply> _reply = new();

    public Command Command { get; } = command;

    public ReadMode Mode { get; } = mode;

    /// <summary>
    /// When this call's deadline began (a <see cref="System.Diagnostics.Stopwatch"/> timestamp), if before the cluster
    /// takes it: a call that continues an earlier one for the same client command (a new session's first write after
    /// its registration) gets only what is left of that command's deadline, not one of its own. 0: when taken.
    /// </summary>
    public long DeadlineStartedAt { get; init; }

    public Task<Reply> Reply => _reply.Task;

    public void Complete(Reply reply) => _reply.TrySetResult(reply);

    public void Fail(Exception error)
    {
        if (error is OperationCanceledException cancelled)
        {
            _reply.TrySetCanceled(cancelled.CancellationToken);
        }
        else
        {
            _reply.TrySetException(error);
        }
    }

    /// <summary>Completes this call as <paramref name="reply"/> completes.</summary>
    public void CompleteWith(Task<Reply> reply)
    {
        if (reply.IsCompletedSuccessfully)
        {
            Complete(reply.Result);
            return;
        }

        reply.ContinueWith(
            static (finished, state) =>
            {
                var call = (ClusterCall)state!;
                if (finished.IsCompletedSuccessfully)
                {
                    call.Complete(finished.Result);
                }
                else
                {
                    call.Fail(finished.Exception?.InnerException ?? new OperationCanceledException());
                }
            },
            this,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }
}
