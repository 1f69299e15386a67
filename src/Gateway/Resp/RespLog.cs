using Microsoft.Extensions.Logging;

namespace Dcache.Gateway.Resp;

/// <summary>The front end's log messages (source-generated: no boxing or formatting unless the level is enabled).</summary>
internal static partial class RespLog
{
    [LoggerMessage(EventId = 5001, Level = LogLevel.Error, Message = "Connection {ConnectionId} from {RemoteAddress} failed and was closed")]
    public static partial void ConnectionFailed(ILogger logger, string connectionId, string remoteAddress, Exception exception);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Debug, Message = "Connection {ConnectionId} from {RemoteAddress} sent a protocol error and was closed: {Error}")]
    public static partial void ProtocolError(ILogger logger, string connectionId, string remoteAddress, string error);

    [LoggerMessage(EventId = 5003, Level = LogLevel.Warning, Message = "Refused connection {ConnectionId} from {RemoteAddress}: {MaxClients} clients already connected")]
    public static partial void MaxClientsReached(ILogger logger, string connectionId, string remoteAddress, int maxClients);

    [LoggerMessage(EventId = 5004, Level = LogLevel.Warning, Message = "Closed connection {ConnectionId} from {RemoteAddress}: its unsent replies would exceed {Limit} bytes")]
    public static partial void OutputBufferLimitExceeded(ILogger logger, string connectionId, string remoteAddress, long limit);

    [LoggerMessage(EventId = 5005, Level = LogLevel.Warning, Message = "The cluster client threw for a {Command} command instead of replying")]
    public static partial void ClusterCallThrew(ILogger logger, string command, Exception exception);

    [LoggerMessage(EventId = 5007, Level = LogLevel.Debug, Message = "Closed connection {ConnectionId} from {RemoteAddress}: idle for {IdleTimeoutSeconds} s")]
    public static partial void IdleTimeout(ILogger logger, string connectionId, string remoteAddress, int idleTimeoutSeconds);

    [LoggerMessage(EventId = 5008, Level = LogLevel.Debug, Message = "Could not set TCP keepalive on connection {ConnectionId} from {RemoteAddress}")]
    public static partial void KeepAliveNotSet(ILogger logger, string connectionId, string remoteAddress, Exception exception);

    [LoggerMessage(EventId = 5006, Level = LogLevel.Debug, Message = "Connection {ConnectionId} from {RemoteAddress} closed: {Reason}")]
    public static partial void ConnectionClosed(ILogger logger, string connectionId, string remoteAddress, string reason);
}
