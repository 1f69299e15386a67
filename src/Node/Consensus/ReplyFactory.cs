using Dcache.Cache;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>Builds the gateway-facing replies.</summary>
public static class ReplyFactory
{
    public static Proto.Reply FromCache(ulong id, CacheReply reply)
    {
        var result = ToProto(reply);
        result.Id = id;
        return result;
    }

    private static Proto.Reply ToProto(CacheReply reply)
    {
        switch (reply.Kind)
        {
            case CacheReplyKind.Ok:
                return new Proto.Reply { Ok = true };
            case CacheReplyKind.Nil:
                return new Proto.Reply { Nil = true };
            case CacheReplyKind.Integer:
                return new Proto.Reply { Integer = reply.Integer };
            case CacheReplyKind.Bulk:
                return new Proto.Reply { Bulk = UnsafeByteOperations.UnsafeWrap(reply.Bulk) };
            case CacheReplyKind.Error when reply.ErrorMessage == CacheErrors.SessionExpired:
                // Not a command's result but a refusal the gateway acts on (see FailureKind.SessionExpired).
                return new Proto.Reply { Failure = new Proto.Failure { Kind = Proto.FailureKind.SessionExpired, Message = "not applied: the write's session expired on the cluster" } };
            case CacheReplyKind.Error:
                return new Proto.Reply { Error = reply.ErrorMessage };
            case CacheReplyKind.Array:
                var array = new Proto.ArrayReply();
                foreach (var item in reply.Items)
                {
                    array.Items.Add(ToProto(item));
                }

                return new Proto.Reply { Array = array };
            default:
                throw new InvalidOperationException($"reply of kind {reply.Kind}");
        }
    }

    public static Proto.Reply Failure(ulong id, Proto.FailureKind kind, string message, ulong leaderId = 0, string? leaderAddress = null) => new()
    {
        Id = id,
        Failure = new Proto.Failure { Kind = kind, Message = message, LeaderId = leaderId, LeaderAddress = leaderAddress ?? "" },
    };

    public static Proto.Reply Integer(ulong id, long value) => new() { Id = id, Integer = value };
}
