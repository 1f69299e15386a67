using Dcache.Node.Consensus;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Dcache.Node.Services;

/// <summary>
/// A call that reaches the Raft loop after it stopped fails with <see cref="NodeStoppedException"/>; the caller gets
/// UNAVAILABLE with its words (so a client tries another node) instead of UNKNOWN "Exception was thrown by handler".
/// One place for every service, rather than a catch in each method that waits on the loop.
/// </summary>
public sealed class NodeStoppedInterceptor : Interceptor
{
    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (NodeStoppedException ex)
        {
            throw Unavailable(ex);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        catch (NodeStoppedException ex)
        {
            throw Unavailable(ex);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (NodeStoppedException ex)
        {
            throw Unavailable(ex);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        catch (NodeStoppedException ex)
        {
            throw Unavailable(ex);
        }
    }

    private static RpcException Unavailable(NodeStoppedException stopped) => new(new Status(StatusCode.Unavailable, stopped.Message));
}
