using Dcache.Cache;
using Dcache.Node.Consensus;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Services;

/// <summary>Serves read commands from the local state machine (after ReadIndex, or directly for LOCAL reads).</summary>
public static class ReadExecutor
{
    public static Proto.Reply Execute(Proto.Command command, CacheStateMachine cache, long nowMs) => command.OpCase switch
    {
        Proto.Command.OpOneofCase.Get => ReplyFactory.FromCache(command.Id, cache.Get(command.Get.Key.Span, nowMs)),
        Proto.Command.OpOneofCase.Mget => ReplyFactory.FromCache(command.Id, cache.MultiGet(Keys(command.Mget.Keys), nowMs)),
        Proto.Command.OpOneofCase.Exists => ReplyFactory.Integer(command.Id, cache.CountExisting(Keys(command.Exists.Keys), nowMs)),
        Proto.Command.OpOneofCase.Ttl => ReplyFactory.Integer(command.Id, command.Ttl.Milliseconds
            ? cache.TimeToLiveMs(command.Ttl.Key.Span, nowMs)
            : cache.TimeToLiveSeconds(command.Ttl.Key.Span, nowMs)),
        Proto.Command.OpOneofCase.Dbsize => ReplyFactory.Integer(command.Id, cache.CountKeys(nowMs)),
        _ => ReplyFactory.Failure(command.Id, Proto.FailureKind.InvalidRequest, $"{command.OpCase} is not a read"),
    };

    private static ReadOnlyMemory<byte>[] Keys(Google.Protobuf.Collections.RepeatedField<Google.Protobuf.ByteString> keys)
    {
        var result = new ReadOnlyMemory<byte>[keys.Count];
        for (var i = 0; i < keys.Count; i++)
        {
            result[i] = keys[i].Memory;
        }

        return result;
    }
}
