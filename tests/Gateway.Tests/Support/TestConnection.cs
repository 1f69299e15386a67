using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Microsoft.AspNetCore.Connections;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// A client connected to a <see cref="Resp.RespConnectionHandler"/> through in-memory pipes, as Kestrel would connect
/// it: the handler runs exactly as in production, only the socket is replaced.
/// </summary>
internal sealed class TestConnection : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly Pipe _toServer;
    private readonly Pipe _toClient;
    private ReadOnlySequence<byte> _unread;
    private bool _serverDone;

    public TestConnection(ConnectionHandler handler, PipeOptions? toClientOptions = null)
    {
        _toServer = new Pipe();
        _toClient = new Pipe(toClientOptions ?? PipeOptions.Default);
        var transport = new DuplexPipe(_toServer.Reader, _toClient.Writer);
        var application = new DuplexPipe(_toClient.Reader, _toServer.Writer);
        Context = new DefaultConnectionContext(Guid.NewGuid().ToString("N"), transport, application)
        {
            RemoteEndPoint = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 50000),
            LocalEndPoint = new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 6379),
        };
        Running = RunAsync(handler);
    }

    public DefaultConnectionContext Context { get; }

    /// <summary>The handler's OnConnectedAsync; completes when the server side closes the connection.</summary>
    public Task Running { get; }

    private async Task RunAsync(ConnectionHandler handler)
    {
        try
        {
            await handler.OnConnectedAsync(Context);
        }
        finally
        {
            // What Kestrel does after the handler returns: close both directions.
            await _toClient.Writer.CompleteAsync();
            await _toServer.Reader.CompleteAsync();
        }
    }

    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    public async Task SendAsync(ReadOnlyMemory<byte> bytes)
    {
        try
        {
            using var timeout = new CancellationTokenSource(Timeout);
            await _toServer.Writer.WriteAsync(bytes, timeout.Token);
        }
        catch (InvalidOperationException)
        {
            // The server already closed its reading side.
        }
    }

    /// <summary>Sends a command as a multibulk request.</summary>
    public Task SendCommandAsync(params string[] arguments) => SendAsync(Encode(arguments));

    public static byte[] Encode(params string[] arguments)
    {
        var text = new StringBuilder();
        text.Append('*').Append(arguments.Length).Append("\r\n");
        foreach (var argument in arguments)
        {
            text.Append('$').Append(Encoding.Latin1.GetByteCount(argument)).Append("\r\n").Append(argument).Append("\r\n");
        }

        return Encoding.Latin1.GetBytes(text.ToString());
    }

    public async Task<RespValue> CommandAsync(params string[] arguments)
    {
        await SendCommandAsync(arguments);
        return await ReadAsync();
    }

    /// <summary>The next reply; throws when the server closed the connection first.</summary>
    public async Task<RespValue> ReadAsync() =>
        await TryReadAsync() ?? throw new InvalidOperationException("the server closed the connection");

    /// <summary>The next reply, or null when the server closed the connection.</summary>
    public async Task<RespValue?> TryReadAsync()
    {
        using var timeout = new CancellationTokenSource(Timeout);
        while (true)
        {
            if (!_unread.IsEmpty)
            {
                var buffer = _unread;
                if (RespValue.TryRead(ref buffer, out var value))
                {
                    _unread = buffer;
                    return value;
                }
            }

            if (_serverDone)
            {
                return null;
            }

            var result = await _toClient.Reader.ReadAsync(timeout.Token);
            var combined = new byte[_unread.Length + result.Buffer.Length];
            _unread.CopyTo(combined);
            result.Buffer.CopyTo(combined.AsSpan((int)_unread.Length));
            _unread = new ReadOnlySequence<byte>(combined);
            _toClient.Reader.AdvanceTo(result.Buffer.End);
            _serverDone = result.IsCompleted;
        }
    }

    /// <summary>Bytes the server wrote that the client has not read yet, once the server has stopped writing.</summary>
    public async Task<long> UnreadBytesAsync()
    {
        // Wait until the server's output stops growing (it is blocked on a full pipe, or done).
        long previous = -1;
        while (true)
        {
            var result = await _toClient.Reader.ReadAsync();
            var length = result.Buffer.Length;
            _toClient.Reader.AdvanceTo(result.Buffer.Start);
            if (length == previous)
            {
                return length + _unread.Length;
            }

            previous = length;
            await Task.Delay(50);
        }
    }

    /// <summary>Reads every reply until the server closes the connection (run it beside sending, as a real client reads).</summary>
    public async Task<List<RespValue>> DrainUntilClosedAsync()
    {
        var replies = new List<RespValue>();
        while (await TryReadAsync() is { } reply)
        {
            replies.Add(reply);
        }

        await Running.WaitAsync(Timeout);
        return replies;
    }

    /// <summary>True once the server closed the connection (after any replies still unread are drained).</summary>
    public async Task<bool> IsClosedAsync()
    {
        while (await TryReadAsync() is not null)
        {
        }

        await Running.WaitAsync(Timeout);
        return true;
    }

    /// <summary>The client closes its sending side, as a socket shutdown would.</summary>
    public async Task CloseAsync() => await _toServer.Writer.CompleteAsync();

    public async ValueTask DisposeAsync()
    {
        await _toServer.Writer.CompleteAsync();
        try
        {
            await Running.WaitAsync(Timeout);
        }
        finally
        {
            await _toClient.Reader.CompleteAsync();
        }
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }
}
