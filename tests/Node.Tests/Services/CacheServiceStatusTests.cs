using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Tests.Consensus;
using Grpc.Core;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Services;

/// <summary>
/// A node's status names its leader and where that leader listens: a gateway configured with other nodes finds a
/// leader it has never heard of (one that joined since) this way, and dcachectl shows it.
/// </summary>
public sealed class CacheServiceStatusTests
{
    [Fact]
    public async Task A_followers_status_names_its_leader_and_the_leaders_address()
    {
        await using var node = PeerlessNode.Start(new Dictionary<ulong, string> { [2] = "http://127.0.0.1:7002", [3] = "http://127.0.0.1:7003" });
        await node.FollowAsync(leader: 2, term: 1);
        using var metrics = new NodeMetrics();
        var options = new NodeOptions { NodeId = 1, ClusterId = "test" };
        // Status reads neither the call's context nor the runtime (which owns the node's storage).
        var service = new CacheService(node.Driver, node.Addresses, options, runtime: null!, metrics);

        var status = await service.Status(new Proto.StatusRequest(), new CallContext(CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal((1UL, "test", "Follower", 2UL, "http://127.0.0.1:7002"), (status.NodeId, status.ClusterId, status.Role, status.LeaderId, status.LeaderAddress));
        Assert.Equal([(1UL, ""), (2UL, "http://127.0.0.1:7002"), (3UL, "http://127.0.0.1:7003")], status.Members.Select(m => (m.Id, m.Address)));
    }

    [Fact]
    public async Task A_status_call_that_ends_while_the_loop_is_busy_ends_with_it_rather_than_wait_for_the_loop()
    {
        await using var node = PeerlessNode.Start();
        using var metrics = new NodeMetrics();
        var service = new CacheService(node.Driver, node.Addresses, new NodeOptions { NodeId = 1, ClusterId = "test" }, runtime: null!, metrics);
        using var loopHeld = new ManualResetEventSlim();
        var held = node.Driver.RunOnLoopAsync(_ => loopHeld.Wait(TimeSpan.FromMinutes(1)));
        try
        {
            using var call = new CancellationTokenSource();
            var status = service.Status(new Proto.StatusRequest(), new CallContext(call.Token));
            await call.CancelAsync();

            // Before, the handler waited for the loop and then wrote a reply to a call gRPC had already ended.
            var ended = await Assert.ThrowsAsync<RpcException>(() => status.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal(StatusCode.Cancelled, ended.StatusCode);
        }
        finally
        {
            loopHeld.Set();
            await held;
        }
    }

    /// <summary>The parts of a call's context Status reads: its cancellation and deadline.</summary>
    private sealed class CallContext(CancellationToken cancellation) : ServerCallContext
    {
        protected override string MethodCore => "/dcache.Cache/Status";
        protected override string HostCore => "127.0.0.1";
        protected override string PeerCore => "ipv4:127.0.0.1:1";
        protected override DateTime DeadlineCore => DateTime.MaxValue;
        protected override Metadata RequestHeadersCore { get; } = [];
        protected override CancellationToken CancellationTokenCore => cancellation;
        protected override Metadata ResponseTrailersCore { get; } = [];
        protected override Status StatusCore { get; set; }
        protected override WriteOptions? WriteOptionsCore { get; set; }
        protected override AuthContext AuthContextCore => new(null, []);

        protected override ContextPropagationToken CreatePropagationTokenCore(ContextPropagationOptions? options) => throw new NotSupportedException();

        protected override Task WriteResponseHeadersAsyncCore(Metadata responseHeaders) => Task.CompletedTask;
    }
}
