using System.Globalization;
using System.Net.Sockets;
using Dcache.Protocol;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dcache.Ctl;

/// <summary>How dcachectl reaches a cluster: the --endpoints, --cluster-id and --secret options, and what a failed call means.</summary>
internal sealed class ClusterConnection(Options options)
{
    private const string LeaderIdTrailer = "dcache-leader-id";
    private const string LeaderAddressTrailer = "dcache-leader-address";

    public IReadOnlyList<string> Endpoints { get; } = options.Endpoints;

    public Metadata Headers { get; } = new() { { "dcache-cluster-id", options.ClusterId }, { "dcache-secret", options.Secret } };

    public static GrpcChannel Open(string endpoint) => GrpcChannels.ForNode(endpoint);

    /// <summary>What went wrong, in words an operator can act on.</summary>
    public static string Describe(RpcException ex) => ex.StatusCode switch
    {
        StatusCode.Unavailable when ex.Status.DebugException is { } cause => $"cannot reach the node ({Reason(cause)})",
        // Raised here, not sent by the node: the connection broke or went silent (a paused or frozen process).
        StatusCode.Internal or StatusCode.Unknown or StatusCode.Cancelled when ex.Status.DebugException is { } cause => $"no answer from the node ({Reason(cause)})",
        // Sent by the node itself (no leader, no quorum, shutting down): its words say why.
        StatusCode.Unavailable => $"unavailable: {ex.Status.Detail}",
        StatusCode.Unauthenticated => $"refused: {ex.Status.Detail} (check --secret)",
        StatusCode.PermissionDenied => $"refused: {ex.Status.Detail} (check --cluster-id)",
        StatusCode.DeadlineExceeded when ex.Status.Detail.Length == 0 => "no answer in time",
        // A node of an older build, during a rolling upgrade, for a command that came later (member update).
        StatusCode.Unimplemented => $"the node's build does not have this command ({ex.Status.Detail}); upgrade it first",
        _ => ex.Status.Detail,
    };

    /// <summary>
    /// Runs <paramref name="call"/> on the leader: tries the endpoints in turn and follows a node's "not the leader"
    /// answer to the leader it names. Returns the reply, or null after printing <paramref name="failure"/> and why
    /// each endpoint could not do it. (Calls any node may serve, such as a backup, are simply served by the first.)
    /// </summary>
    public async Task<T?> OnLeaderAsync<T>(Func<GrpcChannel, Metadata, Task<T>> call, string failure = "no leader could be reached")
        where T : class
    {
        var answer = await TryOnLeaderAsync(call).ConfigureAwait(false);
        if (answer.Refusal is { } refusal)
        {
            throw refusal;
        }

        if (answer.Reply is null)
        {
            answer.PrintFailure(failure);
        }

        return answer.Reply;
    }

    /// <summary>
    /// <see cref="OnLeaderAsync"/> without the printing: the reply, or why each endpoint could not give it, or the
    /// failure of the request itself (<see cref="LeaderAnswer{T}.Refusal"/>) together with whether an endpoint tried
    /// before it may have done what was asked: a change whose first call broke on a node that died may be refused by
    /// the next one as already made.
    /// </summary>
    public async Task<LeaderAnswer<T>> TryOnLeaderAsync<T>(Func<GrpcChannel, Metadata, Task<T>> call)
        where T : class
    {
        var tried = new List<string>();
        var outcomeUnknown = false;
        var queue = new Queue<string>(Endpoints);
        var hops = 0;
        while (queue.TryDequeue(out var endpoint) && hops++ < 10)
        {
            try
            {
                using var channel = Open(endpoint);
                return new LeaderAnswer<T>(await call(channel, Headers).ConfigureAwait(false), tried, outcomeUnknown);
            }
            catch (RpcException ex) when (ex.StatusCode == StatusCode.FailedPrecondition && ex.Trailers.GetValue(LeaderAddressTrailer) is { } leader)
            {
                // Ask the leader next, before any other endpoint.
                var rest = queue.ToList();
                queue.Clear();
                queue.Enqueue(leader);
                foreach (var other in rest.Where(e => e != leader))
                {
                    queue.Enqueue(other);
                }

                tried.Add($"{endpoint}: {ex.Status.Detail}");
            }
            catch (RpcException ex) when (IsAboutThisNode(ex))
            {
                outcomeUnknown |= IsOutcomeUnknown(ex);
                tried.Add($"{endpoint}: {Describe(ex)}");
            }
            catch (UriFormatException ex)
            {
                tried.Add($"{endpoint}: {ex.Message}");
            }
            catch (RpcException ex)
            {
                return new LeaderAnswer<T>(null, tried, outcomeUnknown || IsOutcomeUnknown(ex), ex);
            }
        }

        return new LeaderAnswer<T>(null, tried, outcomeUnknown);
    }

    /// <summary>
    /// Whether a failed call may have done what it asked all the same: it reached a node and broke or timed out before
    /// the answer, or the node itself says the outcome is unknown. A node that refused the connection did nothing.
    /// </summary>
    public static bool IsOutcomeUnknown(RpcException ex) => ex.StatusCode switch
    {
        _ when ex.Status.DebugException is { } cause && NeverSent(cause) => false,
        StatusCode.DeadlineExceeded or StatusCode.Cancelled or StatusCode.Unknown or StatusCode.Internal => true,
        StatusCode.Unavailable when ex.Status.DebugException is not null => true,
        StatusCode.Unavailable => ex.Status.Detail.StartsWith("outcome unknown", StringComparison.Ordinal),
        _ => false,
    };

    /// <summary>
    /// Failures that say something about the node asked (down, wrong credentials, not the leader and no hint), so
    /// another endpoint may do better; any other failure is the answer to the request itself.
    /// </summary>
    private static bool IsAboutThisNode(RpcException ex) =>
        ex.StatusCode is StatusCode.Unavailable or StatusCode.Unauthenticated or StatusCode.PermissionDenied or StatusCode.Unimplemented
        || (ex.StatusCode == StatusCode.FailedPrecondition && ex.Trailers.GetValue(LeaderIdTrailer) is not null)
        || (ex.StatusCode == StatusCode.DeadlineExceeded && ex.Status.Detail.Length == 0)
        // A failure of the connection raised by the client library (a silent node's keepalive ping unanswered, a broken
        // stream), not a status the node sent.
        || (ex.StatusCode is StatusCode.Internal or StatusCode.Unknown or StatusCode.Cancelled && ex.Status.DebugException is not null);

    /// <summary>
    /// The connection was never made (refused, not completed within the connect timeout, a name that does not
    /// resolve): the request never left, so it surely did nothing. (A gRPC channel has no request timeout of its own,
    /// deadlines being statuses, so the one TimeoutException its handler raises is the connect timeout's.)
    /// </summary>
    private static bool NeverSent(Exception cause)
    {
        for (Exception? ex = cause; ex is not null; ex = ex.InnerException)
        {
            if (ex is HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError }
                or SocketException { SocketErrorCode: SocketError.ConnectionRefused }
                or TimeoutException)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The most telling message of a failure's chain: the first that names what happened, not a bare "canceled".</summary>
    private static string Reason(Exception cause)
    {
        for (Exception? ex = cause; ex is not null; ex = ex.InnerException)
        {
            if (ex is TimeoutException || (ex is HttpRequestException && ex.InnerException is null or OperationCanceledException))
            {
                return ex.Message;
            }
        }

        return Innermost(cause).Message;
    }

    private static Exception Innermost(Exception ex)
    {
        while (ex.InnerException is { } inner)
        {
            ex = inner;
        }

        return ex;
    }

    public static string Text(ulong value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>What <see cref="ClusterConnection.TryOnLeaderAsync"/> got: the leader's reply, or why each endpoint gave none.</summary>
/// <param name="OutcomeUnknown">Some endpoint may have done what was asked before its call failed.</param>
/// <param name="Refusal">The failure of the request itself, where a node answered it with one (not a failure of that node).</param>
internal sealed record LeaderAnswer<T>(T? Reply, IReadOnlyList<string> Tried, bool OutcomeUnknown, RpcException? Refusal = null)
    where T : class
{
    public void PrintFailure(string failure)
    {
        Console.Error.WriteLine($"dcachectl: {failure}:");
        foreach (var line in Tried)
        {
            Console.Error.WriteLine($"  {line}");
        }
    }
}
