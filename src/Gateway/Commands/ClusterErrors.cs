using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Commands;

/// <summary>
/// The error replies for cluster-level failures. Their first words are stable and documented in docs/protocol.md:
/// clients (and the failover test) tell "not applied" from "may have applied" by the prefix alone.
/// </summary>
public static class ClusterErrors
{
    /// <summary>Prefix of "the command was not applied; retrying it is safe" (no leader, node unavailable, retries exhausted).</summary>
    public const string TryAgainPrefix = "TRYAGAIN cluster unavailable, command not applied (safe to retry): ";

    /// <summary>Prefix of "this write may or may not have been applied": the client must check before retrying a non-idempotent write.</summary>
    public const string OutcomeUnknownPrefix = "UNKNOWN outcome unknown: the command may or may not have been applied: ";

    /// <summary>Prefix of a request the cluster refused as malformed when the node's message has no Redis error code of its own.</summary>
    public const string InvalidRequestPrefix = "ERR invalid request: ";

    /// <summary>The RESP error text for a failure reply of a command.</summary>
    public static string Describe(Failure failure, bool isWrite)
    {
        var detail = string.IsNullOrWhiteSpace(failure.Message) ? DefaultDetail(failure.Kind) : failure.Message;
        switch (failure.Kind)
        {
            case FailureKind.NotLeader:
            case FailureKind.Unavailable:
                return TryAgainPrefix + detail;
            case FailureKind.InvalidRequest:
                return HasErrorCode(detail) ? detail : InvalidRequestPrefix + detail;
            default:
                // A read changes nothing, so whatever happened to it, retrying is safe.
                return isWrite ? OutcomeUnknownPrefix + detail : TryAgainPrefix + detail;
        }
    }

    /// <summary>The RESP error text when the cluster client threw instead of replying.</summary>
    public static string Describe(Exception exception, bool isWrite)
    {
        var detail = exception is OperationCanceledException or TimeoutException
            ? "the cluster did not answer in time"
            : "the cluster client failed (" + exception.GetType().Name + ")";
        return isWrite ? OutcomeUnknownPrefix + detail : TryAgainPrefix + detail;
    }

    private static string DefaultDetail(FailureKind kind) => kind switch
    {
        FailureKind.NotLeader => "no leader accepted the command",
        FailureKind.Unavailable => "no node could serve the command",
        FailureKind.OutcomeUnknown => "the cluster lost track of the command",
        FailureKind.InvalidRequest => "the cluster refused the command",
        _ => "the cluster gave no reason",
    };

    // "ERR ...", "OOM ...", "WRONGTYPE ...": an upper-case word then a space, as Redis error replies start.
    private static bool HasErrorCode(string message)
    {
        var space = message.IndexOf(' ', StringComparison.Ordinal);
        if (space <= 0)
        {
            return false;
        }

        for (var i = 0; i < space; i++)
        {
            if (message[i] is < 'A' or > 'Z')
            {
                return false;
            }
        }

        return true;
    }
}
