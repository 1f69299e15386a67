using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Protocol;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Services;

/// <summary>
/// Serves read commands from the local state machine in one call (after ReadIndex, or directly for LOCAL reads). KEYS and
/// SCAN here do all their work at once; the driver loop serves those through <see cref="LongReads"/>, a slice at a time.
/// </summary>
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
        Proto.Command.OpOneofCase.Strlen => ReplyFactory.Integer(command.Id, cache.StringLength(command.Strlen.Key.Span, nowMs)),
        Proto.Command.OpOneofCase.Getrange => ReplyFactory.FromCache(command.Id, cache.GetRange(command.Getrange.Key.Span, command.Getrange.Start, command.Getrange.End, nowMs)),
        Proto.Command.OpOneofCase.Type => ReplyFactory.FromCache(command.Id, CacheReply.FromBulk(cache.ContainsKey(command.Type.Key.Span, nowMs) ? "string"u8.ToArray() : "none"u8.ToArray())),
        Proto.Command.OpOneofCase.Expiretime => ReplyFactory.Integer(command.Id, cache.ExpireTime(command.Expiretime.Key.Span, nowMs, command.Expiretime.Milliseconds)),
        Proto.Command.OpOneofCase.Keys => ReplyFactory.FromCache(command.Id, Keys(cache, command.Keys.Pattern.Memory, nowMs)),
        Proto.Command.OpOneofCase.Scan => ReplyFactory.FromCache(command.Id, Scan(cache, command.Scan, nowMs)),
        Proto.Command.OpOneofCase.Randomkey => ReplyFactory.FromCache(command.Id, cache.RandomKey(nowMs, Random.Shared)),
        Proto.Command.OpOneofCase.Watch => ReplyFactory.FromCache(command.Id, cache.Watch(Keys(command.Watch.Keys), nowMs)),
        _ => ReplyFactory.Failure(command.Id, Proto.FailureKind.InvalidRequest, $"{command.OpCase} is not a read"),
    };

    /// <summary>KEYS's and SCAN's pattern as a filter: null for <c>*</c>, which accepts every key.</summary>
    public static KeyFilter? PatternFilter(ReadOnlyMemory<byte> pattern) =>
        pattern.Span.SequenceEqual("*"u8) ? null : key => GlobPattern.Matches(pattern.Span, key, ignoreCase: false);

    private static CacheReply Keys(CacheStateMachine cache, ReadOnlyMemory<byte> pattern, long nowMs) => cache.Keys(nowMs, PatternFilter(pattern));

    private static CacheReply Scan(CacheStateMachine cache, Proto.ScanRequest scan, long nowMs)
    {
        // A page larger than int.MaxValue keys could not be sent anyway; the count only bounds the work.
        var count = (int)Math.Min(scan.Count, int.MaxValue);
        return cache.Scan(scan.Cursor, count, nowMs, PatternFilter(scan.Pattern.Memory)).ToReply();
    }

    /// <summary>A request's keys as the cache takes them (views of the request's bytes, not copies).</summary>
    public static ReadOnlyMemory<byte>[] Keys(Google.Protobuf.Collections.RepeatedField<Google.Protobuf.ByteString> keys)
    {
        var result = new ReadOnlyMemory<byte>[keys.Count];
        for (var i = 0; i < keys.Count; i++)
        {
            result[i] = keys[i].Memory;
        }

        return result;
    }
}
