using Grpc.Net.Client;

namespace Dcache.Protocol;

/// <summary>The one way nodes, gateways and tools open a channel to a node: long-lived, h2c, quick to notice a dead peer.</summary>
public static class GrpcChannels
{
    public static GrpcChannel ForNode(string address, int? maxMessageBytes = null) =>
        GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            MaxReceiveMessageSize = maxMessageBytes,
            MaxSendMessageSize = maxMessageBytes,
            HttpHandler = new SocketsHttpHandler
            {
                // Past 100 concurrent streams (Kestrel's default per connection) calls would queue without this.
                EnableMultipleHttp2Connections = true,
                ConnectTimeout = TimeSpan.FromSeconds(1),
                KeepAlivePingDelay = TimeSpan.FromSeconds(5),
                KeepAlivePingTimeout = TimeSpan.FromSeconds(5),
                PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
            },
        });
}
