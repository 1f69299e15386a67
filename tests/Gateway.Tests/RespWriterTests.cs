using System.Buffers;
using System.Text;
using Dcache.Gateway.Commands;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

public sealed class RespWriterTests
{
    private static string Written(Action<IBufferWriter<byte>> write)
    {
        var output = new ArrayBufferWriter<byte>();
        write(output);
        return Encoding.Latin1.GetString(output.WrittenSpan);
    }

    [Fact]
    public void SimpleTypesAreTheSameInBothProtocols()
    {
        Assert.Equal("+OK\r\n", Written(RespWriter.WriteOk));
        Assert.Equal("+PONG\r\n", Written(o => RespWriter.WriteSimpleString(o, "PONG"u8)));
        Assert.Equal(":-9223372036854775808\r\n", Written(o => RespWriter.WriteInteger(o, long.MinValue)));
        Assert.Equal("$5\r\nhello\r\n", Written(o => RespWriter.WriteBulk(o, "hello"u8)));
        Assert.Equal("$0\r\n\r\n", Written(o => RespWriter.WriteBulk(o, ReadOnlySpan<byte>.Empty)));
        Assert.Equal("$3\r\nh\u00c3\u00a9\r\n", Written(o => RespWriter.WriteBulk(o, "hé")));
        Assert.Equal("*2\r\n", Written(o => RespWriter.WriteArrayHeader(o, 2)));
    }

    [Fact]
    public void NullsDifferBetweenProtocols()
    {
        Assert.Equal("$-1\r\n", Written(o => RespWriter.WriteNull(o, RespProtocol.Resp2)));
        Assert.Equal("_\r\n", Written(o => RespWriter.WriteNull(o, RespProtocol.Resp3)));
        Assert.Equal("*-1\r\n", Written(o => RespWriter.WriteNullArray(o, RespProtocol.Resp2)));
        Assert.Equal("_\r\n", Written(o => RespWriter.WriteNullArray(o, RespProtocol.Resp3)));
    }

    [Fact]
    public void MapsPushesAndVerbatimTextDifferBetweenProtocols()
    {
        Assert.Equal("*4\r\n", Written(o => RespWriter.WriteMapHeader(o, 2, RespProtocol.Resp2)));
        Assert.Equal("%2\r\n", Written(o => RespWriter.WriteMapHeader(o, 2, RespProtocol.Resp3)));
        Assert.Equal("*3\r\n", Written(o => RespWriter.WritePushHeader(o, 3, RespProtocol.Resp2)));
        Assert.Equal(">3\r\n", Written(o => RespWriter.WritePushHeader(o, 3, RespProtocol.Resp3)));
        Assert.Equal("$2\r\nhi\r\n", Written(o => RespWriter.WriteVerbatimText(o, "hi"u8, RespProtocol.Resp2)));
        Assert.Equal("=6\r\ntxt:hi\r\n", Written(o => RespWriter.WriteVerbatimText(o, "hi"u8, RespProtocol.Resp3)));
    }

    [Fact]
    public void ErrorsCannotBreakFramingAndKeepClientBytes()
    {
        Assert.Equal("-ERR a  b\r\n", Written(o => RespWriter.WriteError(o, "ERR a\r\nb")));
        Assert.Equal("-ERR \u00ff\r\n", Written(o => RespWriter.WriteError(o, "ERR \u00ff")));

        // Characters beyond Latin-1 are sent as UTF-8.
        var output = new ArrayBufferWriter<byte>();
        RespWriter.WriteError(output, "ERR \u20ac");
        Assert.Equal("-ERR \u20ac\r\n"u8.ToArray(), output.WrittenSpan.ToArray());
    }

    [Fact]
    public void LargeBulkIsWrittenInChunks()
    {
        var value = new byte[100_000];
        new Random(100_000).NextBytes(value);
        var output = new ArrayBufferWriter<byte>();
        RespWriter.WriteBulk(output, value);
        var expected = Encoding.ASCII.GetBytes("$100000\r\n").Concat(value).Concat("\r\n"u8.ToArray()).ToArray();
        Assert.Equal(expected, output.WrittenSpan.ToArray());
    }

    [Fact]
    public void SimpleRepliesDoNotAllocate()
    {
        var output = new ArrayBufferWriter<byte>(4096);
        RespWriter.WriteBulk(output, "warm"u8);
        output.ResetWrittenCount();
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            RespWriter.WriteOk(output);
            RespWriter.WriteInteger(output, i);
            RespWriter.WriteBulk(output, "value"u8);
            RespWriter.WriteNull(output, RespProtocol.Resp3);
            RespWriter.WriteArrayHeader(output, 3);
            output.ResetWrittenCount();
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void ClusterRepliesRenderPerProtocolAndShape()
    {
        var array = Replies.Array(Replies.Bulk("a"), Replies.Nil, Replies.Integer(3));
        Assert.Equal("*3\r\n$1\r\na\r\n$-1\r\n:3\r\n", Render(array, ReplyShape.Default, RespProtocol.Resp2));
        Assert.Equal("*3\r\n$1\r\na\r\n_\r\n:3\r\n", Render(array, ReplyShape.Default, RespProtocol.Resp3));

        var map = Replies.Array(Replies.Bulk("k"), Replies.Bulk("v"));
        Assert.Equal("*2\r\n$1\r\nk\r\n$1\r\nv\r\n", Render(map, ReplyShape.Map, RespProtocol.Resp2));
        Assert.Equal("%1\r\n$1\r\nk\r\n$1\r\nv\r\n", Render(map, ReplyShape.Map, RespProtocol.Resp3));

        Assert.Equal("+PONG\r\n", Render(Replies.Pong, ReplyShape.Status, RespProtocol.Resp3));
        Assert.Equal("-ERR value is not an integer or out of range\r\n", Render(Replies.Error("ERR value is not an integer or out of range"), ReplyShape.Default, RespProtocol.Resp2));
    }

    [Fact]
    public void FailuresBecomeDocumentedErrors()
    {
        static string Failure(FailureKind kind, bool isWrite, string message = "detail") =>
            Render(new Reply { Failure = new Failure { Kind = kind, Message = message } }, ReplyShape.Default, RespProtocol.Resp2, isWrite);

        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "detail\r\n", Failure(FailureKind.Unavailable, isWrite: true));
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "detail\r\n", Failure(FailureKind.NotLeader, isWrite: true));
        Assert.Equal("-" + ClusterErrors.OutcomeUnknownPrefix + "detail\r\n", Failure(FailureKind.OutcomeUnknown, isWrite: true));
        Assert.Equal("-" + ClusterErrors.OutcomeUnknownPrefix + "detail\r\n", Failure(FailureKind.FailureUnspecified, isWrite: true));

        // A read changed nothing whatever happened to it: retrying is safe.
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "detail\r\n", Failure(FailureKind.OutcomeUnknown, isWrite: false));
        Assert.Equal("-ERR invalid expire time in 'set' command\r\n", Failure(FailureKind.InvalidRequest, true, "ERR invalid expire time in 'set' command"));
        Assert.Equal("-" + ClusterErrors.InvalidRequestPrefix + "command without an operation\r\n", Failure(FailureKind.InvalidRequest, true, "command without an operation"));
        Assert.StartsWith("-TRYAGAIN ", Failure(FailureKind.Unavailable, true, ""), StringComparison.Ordinal);
        Assert.StartsWith("-UNKNOWN ", Failure(FailureKind.OutcomeUnknown, true, "line\r\nbreak"), StringComparison.Ordinal);
        Assert.DoesNotContain("\n", Failure(FailureKind.OutcomeUnknown, true, "line\r\nbreak").TrimEnd(), StringComparison.Ordinal);
    }

    [Fact]
    public void AFailureInsideATransactionsReplyReadsAsTheTransactionsOutcomeNotAsARead()
    {
        // EXEC's items render with shapes of their own; a failure among them is the outcome of the transaction, a write.
        var exec = Replies.Array(Replies.Ok, new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "detail" } });
        var written = Written(o => ReplyRenderer.Write(o, exec, ReplyShape.NilArray, RespProtocol.Resp2, isWrite: true, [ReplyShape.Default, ReplyShape.Default]));
        Assert.Equal("*2\r\n+OK\r\n-" + ClusterErrors.OutcomeUnknownPrefix + "detail\r\n", written);
    }

    private static string Render(Reply reply, ReplyShape shape, RespProtocol protocol, bool isWrite = false) =>
        Written(o => ReplyRenderer.Write(o, reply, shape, protocol, isWrite));
}
