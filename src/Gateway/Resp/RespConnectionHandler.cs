using System.IO.Pipelines;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Commands;
using Microsoft.AspNetCore.Connections;
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
        try
        {
            var context = new CommandContext(client, _cluster, _options, _clients, _sessions, _time, connection.ConnectionClosed);
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
            RespMetrics.ConnectionEnded();
            _clients.Remove(client);
            _clients.ReleaseSlot();
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
