using System.Net;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// Review 22: a node that closes while it receives a snapshot abandons it (session 21), but the abandonment left the
/// handler as an <see cref="OperationCanceledException"/>: the leader got UNKNOWN "Exception was thrown by handler" and the
/// stopping node logged an error with a stack trace, as a stopped node's admin calls did before session 18. It is
/// UNAVAILABLE with the reason now, which the leader takes as any failed send (it retries later).
/// </summary>
public sealed class InstallSnapshotStopTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_snapshot_being_received_when_the_node_closes_ends_unavailable_without_an_error_logged()
    {
        using var closing = new CancellationTokenSource();
        var inbox = new ClosingInbox(closing.Token);
        var credentials = new ClusterCredentials("test", "secret");
        var errors = new ErrorLog();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(errors);
        builder.Services.AddSingleton<IRaftInbox>(inbox);
        builder.Services.AddSingleton(credentials);
        builder.Services.AddGrpc(grpc => grpc.Interceptors.Add<NodeStoppedInterceptor>());
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2));
        await using var app = builder.Build();
        app.MapGrpcService<RaftTransportService>();
        await app.StartAsync();
        try
        {
            var port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single()).Port;
            using var channel = Protocol.GrpcChannels.ForNode($"http://127.0.0.1:{port}");
            var client = new Wire.RaftTransport.RaftTransportClient(channel);
            using var call = client.InstallSnapshot(credentials.ToHeaders(from: 2), DateTime.UtcNow.Add(Patience));
            var snapshot = new Message { Type = MessageType.Snapshot, From = 2, To = 1, Term = 1, Snapshot = new SnapshotMetadata(100, 1, Membership.Of([1UL, 2UL])) };
            await call.RequestStream.WriteAsync(new Wire.SnapshotChunk { Offset = 0, Data = ByteString.CopyFrom(new byte[1024]), Message = RaftMessageCodec.ToWire(snapshot) });
            await inbox.FirstChunk.WaitAsync(Patience);

            await closing.CancelAsync();

            var refused = await Assert.ThrowsAsync<RpcException>(() => call.ResponseAsync.WaitAsync(Patience));
            Assert.Equal(StatusCode.Unavailable, refused.StatusCode);
            Assert.True(inbox.Disposed, "the abandoned snapshot's writer was not disposed");
            Assert.Empty(errors.Entries);
        }
        finally
        {
            await app.StopAsync();
        }
    }

    private sealed class ClosingInbox(CancellationToken closing) : IRaftInbox, IIncomingSnapshot
    {
        private readonly TaskCompletionSource _firstChunk = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task FirstChunk => _firstChunk.Task;

        public bool Disposed { get; private set; }

        public ulong NodeId => 1;

        public CancellationToken Closing => closing;

        public bool WasRemoved(ulong peer) => false;

        public void PeerAddressHeard(ulong peer, string address)
        {
        }

        public void PeerEntryFormatHeard(ulong peer, byte format)
        {
        }

        public void PeerClockHeard(ulong peer, long readingMs, long echoMs, long echoHeldMs, long? clusterOffsetMs)
        {
        }

        public bool TryPost(Message message, long readTimeMs = 0) => true;

        public IIncomingSnapshot BeginSnapshot(ulong peer, Message message) => this;

        public ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
        {
            _firstChunk.TrySetResult();
            return ValueTask.CompletedTask;
        }

        public ValueTask CompleteAsync(ulong checksum, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask DisposeAsync()
        {
            Disposed = true;
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Keeps what any logger wrote at Error or above.</summary>
    private sealed class ErrorLog : ILoggerProvider, ILogger
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _entries = new();

        public IReadOnlyCollection<string> Entries => _entries;

        public ILogger CreateLogger(string categoryName) => this;

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                _entries.Enqueue($"{formatter(state, exception)} {exception?.GetType().Name}");
            }
        }

        public void Dispose()
        {
        }
    }
}
