using System.Text;
using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Integration.Tests.Support;

/// <summary>Builders for the gateway-to-node commands used by the tests.</summary>
internal static class Commands
{
    private static long s_nextId;

    public static ByteString Bytes(string text) => ByteString.CopyFromUtf8(text);

    public static Command Set(string key, string value, long? ttlMs = null, ulong clientId = 0, ulong sequence = 0)
    {
        var set = new SetRequest { Key = Bytes(key), Value = Bytes(value) };
        if (ttlMs is { } ttl)
        {
            set.TtlMs = ttl;
        }

        return new Command { Id = NextId(), ClientId = clientId, Sequence = sequence, Set = set };
    }

    public static Command Get(string key, ReadConsistency consistency = ReadConsistency.Linearizable) =>
        new() { Id = NextId(), Consistency = consistency, Get = new GetRequest { Key = Bytes(key) } };

    public static Command IncrBy(string key, long delta, ulong clientId = 0, ulong sequence = 0) =>
        new() { Id = NextId(), ClientId = clientId, Sequence = sequence, IncrBy = new IncrByRequest { Key = Bytes(key), Delta = delta } };

    public static Command Ttl(string key, bool milliseconds = true) =>
        new() { Id = NextId(), Ttl = new TtlRequest { Key = Bytes(key), Milliseconds = milliseconds } };

    public static Command GetDel(string key) => new() { Id = NextId(), Getdel = new GetDelRequest { Key = Bytes(key) } };

    public static Command SetRange(string key, long offset, string value) =>
        new() { Id = NextId(), Setrange = new SetRangeRequest { Key = Bytes(key), Offset = offset, Value = Bytes(value) } };

    public static Command Copy(string source, string destination, bool replace = false) =>
        new() { Id = NextId(), Copy = new CopyRequest { Source = Bytes(source), Destination = Bytes(destination), Replace = replace } };

    /// <summary>MULTI ... EXEC of <paramref name="commands"/>.</summary>
    public static Command Transaction(params Command[] commands)
    {
        var transaction = new TransactionRequest();
        transaction.Commands.Add(commands);
        return new Command { Id = NextId(), Transaction = transaction };
    }

    public static Command DbSize() => new() { Id = NextId(), Dbsize = new DbSizeRequest() };

    public static string? BulkText(this Reply reply) => reply.ResultCase switch
    {
        Reply.ResultOneofCase.Bulk => reply.Bulk.ToStringUtf8(),
        Reply.ResultOneofCase.Nil => null,
        _ => throw new InvalidOperationException($"expected a bulk or nil reply, got {reply}"),
    };

    public static string Describe(this Reply reply) => reply.ToString();

    private static ulong NextId() => (ulong)Interlocked.Increment(ref s_nextId);

    public static string Utf8(ReadOnlySpan<byte> bytes) => Encoding.UTF8.GetString(bytes);
}
