using System.IO.Pipelines;
using System.Net.Sockets;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Commands;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Dcache.Gateway.Resp;

/// <summary>
/// Kestrel's entry point for Redis clients: <c>listenOptions.UseConnectionHandler&lt;RespConnectionHandler&gt;()</c>.
/// Each connection speaks RESP2 (RESP3 after HELLO 3) and runs its commands against the <see cref="ICacheCluster"/>.
/// A connection that fails, breaks the protocol or exceeds a limit is closed alone; the others are unaffected.
/// </summary>
public sealed class RespConnectionHandler : ConnectionHandler
{
    private readonly ICacheCluster _cluster;
    private readonly RespOptions _options;
    private readonly RespClientRegistry _clients;
    private readonly ILogger<RespConnectionHandler> _logger;
    private readonly TimeProvider _time;
    private readonly WriteSessionPool _sessions = new();

    public RespConnectionHandler(ICacheCluster cluster, IOptions<RespOptions> options, RespClientRegistry clients, ILogger<RespConnectionHandler> logger)
        : this(cluster, options.Value, clients, logger, TimeProvider.System)
    {
    }

    internal RespConnectionHandler(ICacheCluster cluster, RespOptions options, RespClientRegistry clients, ILogger<RespConnectionHandler> logger, TimeProvider time)
    {
        options.Validate();
        _cluster = cluster;
        _options = options;
        _clients = clients;
        _logger = logger;
        _time = time;
    }

    public override async Task OnConnectedAsync(ConnectionContext connection)
    {
        var remoteAddress = connection.RemoteEndPoint?.ToString() ?? "?";
        if (_options.TcpKeepAliveSeconds > 0 && connection.Features.Get<IConnectionSocketFeature>()?.Socket is { } socket)
        {
            EnableKeepAlive(socket, _options.TcpKeepAliveSeconds, connection.ConnectionId, remoteAddress);
        }

        if (!_clients.TryAcquireSlot(_options.MaxClients))
        {
            RespLog.MaxClientsReached(_logger, connection.ConnectionId, remoteAddress, _options.MaxClients);
            RespMetrics.ConnectionRejected();
            await RefuseAsync(connection.Transport).ConfigureAwait(false);
            return;
        }

        var client = new ClientState(_clients.NextClientId(), remoteAddress, connection.LocalEndPoint?.ToString() ?? "?", _time.GetUtcNow().ToUnixTimeMilliseconds())
        {
            // Without a password every connection is authenticated from the start, as with Redis's nopass default user.
            Authenticated = !_options.AuthenticationRequired,
        };

        _clients.Add(client);
        RespMetrics.ConnectionOpened();
        // Kestrel's ConnectionClosed fires when the client's FIN is read too, and a client that sends its commands and
        // then shuts down its side (`printf 'SET k v\r\n' | nc -N`) still has them run and answered, as in Redis: only a
        // reset ends its calls at once. One that closed both sides sent a FIN too, and nothing tells the two apart until
        // a reply is written to it: its calls end with their replies, their deadline, or HalfCloseGrace after the FIN.
        using var connectionOver = new CancellationTokenSource();
        var accepted = connection.Features.Get<IConnectionSocketFeature>()?.Socket;
        using var closed = connection.ConnectionClosed.Register(() =>
        {
            if (OnlyShutDownSending(accepted))
            {
                connectionOver.CancelAfter(HalfCloseGrace);
            }
            else
            {
                connectionOver.Cancel();
            }
        });
        try
        {
            var context = new CommandContext(client, _cluster, _options, _clients, _sessions, _time, connectionOver.Token);
            await new RespConnection(
                connection.Transport,
                connection.ConnectionId,
                () => connection.Abort(new ConnectionAbortedException("the client's unsent replies exceeded the output buffer limit")),
                context,
                _clients,
                _logger).RunAsync().ConfigureAwait(false);
        }
        catch (Exception exception) when (IsDisconnect(exception))
        {
            RespLog.ConnectionClosed(_logger, connection.ConnectionId, remoteAddress, exception is OperationCanceledException ? "cancelled" : "the connection was reset");
        }
        catch (Exception exception)
        {
            // A bug or an unexpected failure ends this connection only; Kestrel keeps serving the others.
            RespLog.ConnectionFailed(_logger, connection.ConnectionId, remoteAddress, exception);
            RespMetrics.ConnectionClosedByGateway("failure");
        }
        finally
        {
            // Calls still in flight for this connection (its loop ended on a reset, a protocol error, a limit) stop.
            await connectionOver.CancelAsync().ConfigureAwait(false);
            RespMetrics.ConnectionEnded();
            _clients.Remove(client);
            _clients.ReleaseSlot();
        }
    }

    /// <summary>How long the calls of a client that sent its FIN may still take: a client that closed its connection holds nothing longer.</summary>
    internal static readonly TimeSpan HalfCloseGrace = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Whether the peer only shut down its sending side (the socket in CLOSE_WAIT), rather than reset the connection.
    /// Read from Linux's TCP_INFO; false where that cannot be read.
    /// </summary>
    private static bool OnlyShutDownSending(Socket? socket)
    {
        const int IpProtocolTcp = 6;
        const int TcpInfo = 11;
        const byte TcpCloseWait = 8;
        if (socket is null || !OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            Span<byte> info = stackalloc byte[8];
            return socket.GetRawSocketOption(IpProtocolTcp, TcpInfo, info) >= 1 && info[0] == TcpCloseWait;
        }
        catch (Exception exception) when (exception is SocketException or ObjectDisposedException)
        {
            return false;
        }
    }

    /// <summary>
    /// Probes the client after <paramref name="seconds"/> of silence, then every third of it, and gives up after 3
    /// unanswered probes: Redis's settings for its tcp-keepalive, so a vanished client does not hold its slot for ever.
    /// </summary>
    private void EnableKeepAlive(Socket socket, int seconds, string connectionId, string remoteAddress)
    {
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, seconds);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, Math.Max(1, seconds / 3));
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
        }
        catch (Exception exception) when (exception is SocketException or ObjectDisposedException)
        {
            // The client may already be gone (its reset races the accept); serving it will find out.
            RespLog.KeepAliveNotSet(_logger, connectionId, remoteAddress, exception);
        }
    }

    private static async Task RefuseAsync(IDuplexPipe transport)
    {
        try
        {
            RespWriter.WriteError(transport.Output, RedisErrors.MaxClients);
            await transport.Output.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception exception) when (IsDisconnect(exception))
        {
            // The refused client is already gone.
        }
    }

    private static bool IsDisconnect(Exception exception) =>
        exception is ConnectionResetException or ConnectionAbortedException or OperationCanceledException or IOException;
}
