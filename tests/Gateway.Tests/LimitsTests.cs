using System.IO.Pipelines;
using Dcache.Gateway.Tests.Support;
using Microsoft.AspNetCore.Connections;

namespace Dcache.Gateway.Tests;

/// <summary>Limits close or refuse one connection with a clear error; every other connection carries on.</summary>
public sealed class LimitsTests
{
    [Fact]
    public async Task ClientsBeyondMaxClientsAreRefused()
    {
        var server = new TestServer(o => o.MaxClients = 2);
        var first = server.Connect();
        await using var second = server.Connect();
        Assert.Equal("+PONG", (await first.CommandAsync("PING")).ToString());
        Assert.Equal("+PONG", (await second.CommandAsync("PING")).ToString());

        await using (var third = server.Connect())
        {
            Assert.Equal("-ERR max number of clients reached", (await third.ReadAsync()).ToString());
            Assert.True(await third.IsClosedAsync());
        }

        await first.DisposeAsync();
        await using var fourth = server.Connect();
        Assert.Equal("+PONG", (await fourth.CommandAsync("PING")).ToString());
        Assert.Equal(1, server.Clients.ConnectionsRejected);
    }

    [Fact]
    public async Task AProtocolErrorClosesOnlyThatConnection()
    {
        var server = new TestServer();
        await using var good = server.Connect();
        await using var bad = server.Connect();
        await good.CommandAsync("SET", "k", "v");
        await bad.SendAsync("PING\r\n*1\r\n$-7\r\n");
        Assert.Equal("+PONG", (await bad.ReadAsync()).ToString());
        Assert.Equal("-ERR Protocol error: invalid bulk length", (await bad.ReadAsync()).ToString());
        Assert.True(await bad.IsClosedAsync());
        Assert.Equal("$v", (await good.CommandAsync("GET", "k")).ToString());
        Assert.Empty(server.Log.Errors);
    }

    [Fact]
    public async Task ReplyBeyondTheOutputBufferLimitClosesTheConnection()
    {
        var server = new TestServer(o => o.MaxOutputBufferBytes = 10_000);
        server.Cluster.Put("big", new string('x', 20_000));
        server.Cluster.Put("small", "s");
        await using var client = server.Connect();
        await using var other = server.Connect();
        Assert.Equal("$s", (await client.CommandAsync("GET", "small")).ToString());
        await client.SendCommandAsync("GET", "big");
        Assert.True(await client.IsClosedAsync());
        Assert.Contains(server.Log.Entries, e => e.Id.Id == 5004);
        Assert.Equal("$s", (await other.CommandAsync("GET", "small")).ToString());
    }

    [Fact]
    public async Task AClientThatDoesNotReadStallsOnlyItsOwnConnectionWithBoundedBuffering()
    {
        const int pauseThreshold = 16 * 1024;
        var server = new TestServer();
        server.Cluster.Put("v", new string('x', 10_000));
        var slowPipe = new PipeOptions(pauseWriterThreshold: pauseThreshold, resumeWriterThreshold: pauseThreshold / 2);
        await using var slow = server.Connect(slowPipe);
        await using var other = server.Connect();

        var pipeline = Enumerable.Range(0, 200).SelectMany(_ => TestConnection.Encode("GET", "v")).ToArray();
        await slow.SendAsync(pipeline);
        await server.Cluster.WaitForExecutedAsync(200, TestConnection.Timeout);

        // Replies the slow client has not read stay within the transport's threshold plus one flush chunk.
        var unread = await slow.UnreadBytesAsync();
        Assert.True(unread <= pauseThreshold + (64 * 1024) + 10_100, $"{unread} bytes buffered for the slow client");

        Assert.Equal("+PONG", (await other.CommandAsync("PING")).ToString());
        for (var i = 0; i < 200; i++)
        {
            Assert.Equal(10_000, (await slow.ReadAsync()).Bytes!.Length);
        }
    }

    [Fact]
    public async Task RepliesArrivingWhileAClientThatDoesNotReadHoldsUpTheFlushCountAgainstTheOutputBufferLimit()
    {
        const int pauseThreshold = 16 * 1024;
        var server = new TestServer(o => o.MaxOutputBufferBytes = 256 * 1024);
        server.Cluster.Put("now", new string('x', 10_000));
        server.Cluster.Put("later", new string('y', 10_000));
        server.Cluster.HoldOnly = command => command.Get?.Key.ToStringUtf8() == "later";
        server.Cluster.Hold();
        var slowPipe = new PipeOptions(pauseWriterThreshold: pauseThreshold, resumeWriterThreshold: pauseThreshold / 2);
        await using var slow = server.Connect(slowPipe);

        // Ten replies at once (100 KB: the flush after the seventh waits for the client), then a hundred still in the
        // cluster (1 MB) that arrive while the client reads nothing: one batch, each reply far below the limit.
        var pipeline = Enumerable.Range(0, 10).SelectMany(_ => TestConnection.Encode("GET", "now"))
            .Concat(Enumerable.Range(0, 100).SelectMany(_ => TestConnection.Encode("GET", "later")))
            .ToArray();
        await slow.SendAsync(pipeline);
        await server.Cluster.WaitForInFlightAsync(100, TestConnection.Timeout);
        server.Cluster.Release();

        // The limit holds before the client reads a byte.
        var deadline = DateTime.UtcNow + TestConnection.Timeout;
        while (!server.Log.Entries.Any(e => e.Id.Id == 5004))
        {
            Assert.True(DateTime.UtcNow < deadline, "the connection was not closed over its output buffer limit");
            await Task.Delay(10);
        }

        // Aborted (Kestrel then drops what it buffered for the client): a flush of it would wait for the client.
        while (!slow.Context.ConnectionClosed.IsCancellationRequested)
        {
            Assert.True(DateTime.UtcNow < deadline, "the connection over its output buffer limit was not aborted");
            await Task.Delay(10);
        }

        var received = await slow.DrainUntilClosedAsync();
        Assert.True(received.Count < 110, $"all {received.Count} replies were delivered");
    }

    [Fact]
    public async Task DisconnectInTheMiddleOfARequestReleasesTheClient()
    {
        var server = new TestServer();
        var client = server.Connect();
        await client.SendAsync("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc");
        await client.CloseAsync();
        await client.Running.WaitAsync(TestConnection.Timeout);
        Assert.Equal(0, server.Clients.ConnectedClients);
        Assert.Empty(server.Cluster.Executed);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task AnUnexpectedExceptionClosesThatConnectionAndIsLogged()
    {
        var server = new TestServer();
        var input = new Pipe();
        var context = new DefaultConnectionContext("broken", new BrokenTransport(input.Reader), new BrokenTransport(input.Reader));
        await input.Writer.WriteAsync("PING\r\n"u8.ToArray());
        await server.Handler.OnConnectedAsync(context).WaitAsync(TestConnection.Timeout);
        Assert.Contains(server.Log.Entries, e => e.Id.Id == 5001 && e.Exception is InvalidOperationException);
        Assert.Equal(0, server.Clients.ConnectedClients);

        await using var fine = server.Connect();
        Assert.Equal("+PONG", (await fine.CommandAsync("PING")).ToString());
    }

    [Fact]
    public void OptionsAreValidated()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Resp.RespOptions { MaxBulkLength = 0 }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new Resp.RespOptions { MaxRequestBytes = long.MaxValue }.Validate());
        Assert.Throws<ArgumentOutOfRangeException>(() => new Resp.RespOptions { MaxClients = 0 }.Validate());
        new Resp.RespOptions().Validate();
    }

    private sealed class BrokenTransport(PipeReader input) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = new ThrowingWriter();
    }

    private sealed class ThrowingWriter : PipeWriter
    {
        private readonly byte[] _buffer = new byte[4096];

        public override void Advance(int bytes)
        {
        }

        public override void CancelPendingFlush()
        {
        }

        public override void Complete(Exception? exception = null)
        {
        }

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default) =>
            throw new InvalidOperationException("the transport broke");

        public override Memory<byte> GetMemory(int sizeHint = 0) => _buffer;

        public override Span<byte> GetSpan(int sizeHint = 0) => _buffer;
    }
}
