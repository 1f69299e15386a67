using System.Collections.Concurrent;
using System.Net;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// A node's gRPC service on 127.0.0.1 (ephemeral port, h2c) whose replies a test scripts: what the gateway's cluster
/// client meets, without Raft. It records every command batch it receives.
/// </summary>
internal sealed class ScriptedNode : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Service _service;

    private ScriptedNode(WebApplication app, Service service)
    {
        _app = app;
        _service = service;
        Received = service.Received;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
        Address = $"http://127.0.0.1:{new Uri(address).Port}";
    }

    public string Address { get; }

    /// <summary>Every batch message received, in order, as the commands it held (a unary call's command as a batch of one).</summary>
    public ConcurrentQueue<Command[]> Received { get; }

    /// <summary>The headers of every unary <c>ExecuteOne</c> call received, in order.</summary>
    public ConcurrentQueue<Metadata> UnaryHeaders => _service.UnaryHeaders;

    public int CommandsReceived => Received.Sum(batch => batch.Length);

    /// <summary>Command streams the gateway has open to this node now.</summary>
    public int OpenStreams => Volatile.Read(ref _service.OpenStreams);

    /// <summary>Status requests answered or refused so far.</summary>
    public int StatusRequests => Volatile.Read(ref _service.StatusRequests);

    /// <summary>An answer that is never sent: the command goes unanswered and the stream stays open (a black hole).</summary>
    public static Reply Unanswered { get; } = new();

    /// <summary>
    /// Starts a node that answers each command with <paramref name="answer"/>; an answer of null ends the whole stream
    /// with an error at that command, after the replies before it in the batch were sent; <see cref="Unanswered"/>
    /// leaves the command without a reply. A unary <c>ExecuteOne</c> call is answered the same way: an answer of null fails
    /// the call (Unavailable), and <see cref="Unanswered"/> leaves it to its deadline. With <paramref name="delay"/>, a command's reply is sent that long after it
    /// arrived (a reply of its own), while the stream goes on. With <paramref name="status"/>, a status request is
    /// answered with what it returns (the node id, role, leader and membership a test scripts); without, refused.
    /// </summary>
    public static async Task<ScriptedNode> StartAsync(Func<Command, Reply?> answer, Func<Command, TimeSpan>? delay = null, Func<NodeStatus>? status = null)
    {
        var service = new Service(answer, delay, status);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddGrpc();
        builder.Services.AddSingleton(service);
        builder.WebHost.ConfigureKestrel(kestrel =>
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        var app = builder.Build();
        app.MapGrpcService<Service>();
        await app.StartAsync();
        return new ScriptedNode(app, service);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private sealed class Service(Func<Command, Reply?> answer, Func<Command, TimeSpan>? delay, Func<NodeStatus>? status) : Dcache.Protocol.Cache.Cache.CacheBase
    {
        public int OpenStreams;
        public int StatusRequests;

        public ConcurrentQueue<Command[]> Received { get; } = new();

        public ConcurrentQueue<Metadata> UnaryHeaders { get; } = new();

        public override async Task<Reply> ExecuteOne(Command request, ServerCallContext context)
        {
            Received.Enqueue([request.Clone()]);
            UnaryHeaders.Enqueue(context.RequestHeaders);
            if (delay?.Invoke(request) is { } wait && wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, context.CancellationToken);
            }

            if (answer(request) is not { } reply)
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "scripted call failure"));
            }

            if (ReferenceEquals(reply, Unanswered))
            {
                await Task.Delay(Timeout.Infinite, context.CancellationToken);
            }

            reply.Id = request.Id;
            return reply;
        }

        public override async Task Execute(IAsyncStreamReader<CommandBatch> requestStream, IServerStreamWriter<ReplyBatch> responseStream, ServerCallContext context)
        {
            Interlocked.Increment(ref OpenStreams);
            try
            {
                await ServeAsync(requestStream, responseStream, context);
            }
            finally
            {
                Interlocked.Decrement(ref OpenStreams);
            }
        }

        private async Task ServeAsync(IAsyncStreamReader<CommandBatch> requestStream, IServerStreamWriter<ReplyBatch> responseStream, ServerCallContext context)
        {
            // Replies sent late go out one by one beside the stream's own; gRPC allows one write at a time. Not disposed:
            // late replies still waiting when the stream ends give up on their own.
            var writing = new SemaphoreSlim(1, 1);
            var late = new List<Task>();
            await foreach (var batch in requestStream.ReadAllAsync(context.CancellationToken))
            {
                Received.Enqueue([.. batch.Commands.Select(command => command.Clone())]);
                var replies = new ReplyBatch();
                foreach (var command in batch.Commands)
                {
                    if (delay?.Invoke(command) is { } wait && wait > TimeSpan.Zero)
                    {
                        late.Add(AnswerLateAsync(command.Clone(), wait, responseStream, writing, context.CancellationToken));
                        continue;
                    }

                    if (answer(command) is not { } reply)
                    {
                        if (replies.Replies.Count > 0)
                        {
                            await writing.WaitAsync(context.CancellationToken);
                            await responseStream.WriteAsync(replies);
                        }

                        throw new RpcException(new Status(StatusCode.Unavailable, "scripted stream failure"));
                    }

                    if (ReferenceEquals(reply, Unanswered))
                    {
                        continue;
                    }

                    reply.Id = command.Id;
                    replies.Replies.Add(reply);
                }

                if (replies.Replies.Count > 0)
                {
                    await writing.WaitAsync(context.CancellationToken);
                    try
                    {
                        await responseStream.WriteAsync(replies);
                    }
                    finally
                    {
                        writing.Release();
                    }
                }
            }

            await Task.WhenAll(late);
        }

        private async Task AnswerLateAsync(Command command, TimeSpan wait, IServerStreamWriter<ReplyBatch> responseStream, SemaphoreSlim writing, CancellationToken cancellationToken)
        {
            if (answer(command) is not { } reply || ReferenceEquals(reply, Unanswered))
            {
                return;
            }

            reply.Id = command.Id;
            await Task.Delay(wait, cancellationToken);
            await writing.WaitAsync(cancellationToken);
            try
            {
                await responseStream.WriteAsync(new ReplyBatch { Replies = { reply } }, cancellationToken);
            }
            finally
            {
                writing.Release();
            }
        }

        public override Task<NodeStatus> Status(StatusRequest request, ServerCallContext context)
        {
            Interlocked.Increment(ref StatusRequests);
            return status is null
                ? throw new RpcException(new Status(StatusCode.Unimplemented, "a scripted node does not report its status"))
                : Task.FromResult(status());
        }
    }
}
