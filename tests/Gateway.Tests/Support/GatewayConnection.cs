using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// One RESP connection to the gateway, one command at a time. A command that gets no reply in time throws
/// <see cref="TimeoutException"/>; after any exception the connection is unusable (a late reply would be taken for
/// the next command's), so the caller disposes it and opens another.
/// </summary>
internal sealed class GatewayConnection : IDisposable
{
    private readonly Socket _socket;
    private byte[] _buffer = new byte[16 * 1024];
    private int _filled;

    private GatewayConnection(Socket socket) => _socket = socket;

    public static async Task<GatewayConnection> OpenAsync(int port, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(IPAddress.Loopback, port, cancellationToken).ConfigureAwait(false);
            return new GatewayConnection(socket);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public async Task<RespValue> CommandAsync(TimeSpan timeout, params string[] arguments)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            await _socket.SendAsync(Encode(arguments), SocketFlags.None, deadline.Token).ConfigureAwait(false);
            while (true)
            {
                var unread = new ReadOnlySequence<byte>(_buffer, 0, _filled);
                if (RespValue.TryRead(ref unread, out var reply))
                {
                    var consumed = _filled - (int)unread.Length;
                    Buffer.BlockCopy(_buffer, consumed, _buffer, 0, _filled - consumed);
                    _filled -= consumed;
                    return reply!;
                }

                if (_filled == _buffer.Length)
                {
                    Array.Resize(ref _buffer, _buffer.Length * 2);
                }

                var read = await _socket.ReceiveAsync(_buffer.AsMemory(_filled), SocketFlags.None, deadline.Token).ConfigureAwait(false);
                if (read == 0)
                {
                    throw new IOException("the gateway closed the connection");
                }

                _filled += read;
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            throw new TimeoutException($"no reply within {timeout.TotalSeconds:F1} s");
        }
    }

    /// <summary>
    /// Waits until the gateway closes the connection, dropping whatever it sends meanwhile; false when it is still open
    /// after <paramref name="timeout"/>.
    /// </summary>
    public async Task<bool> WaitForCloseAsync(TimeSpan timeout)
    {
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            while (await _socket.ReceiveAsync(_buffer, SocketFlags.None, deadline.Token).ConfigureAwait(false) > 0)
            {
            }

            return true;
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
            return false;
        }
        catch (SocketException)
        {
            // Reset rather than closed: closed all the same.
            return true;
        }
    }

    private static byte[] Encode(string[] arguments)
    {
        var text = new StringBuilder().Append('*').Append(arguments.Length).Append("\r\n");
        foreach (var argument in arguments)
        {
            text.Append('$').Append(Encoding.UTF8.GetByteCount(argument)).Append("\r\n").Append(argument).Append("\r\n");
        }

        return Encoding.UTF8.GetBytes(text.ToString());
    }

    public void Dispose() => _socket.Dispose();
}
