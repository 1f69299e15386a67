using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Integration.Tests;

public sealed class BadInputTests(ITestOutputHelper output)
{
    [Fact]
    public async Task EveryGrpcApiRefusesBadInputWithAClearStatusAndChangesNothing()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("existing", "1"))).Ok);
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));
        var before = await cluster.StatusAsync(leader, digest: true);
        using var channel = GrpcChannel.ForAddress(cluster[leader].GrpcUrl, new GrpcChannelOptions { MaxSendMessageSize = null });
        var cache = new Cache.CacheClient(channel);
        var raft = new Wire.RaftTransport.RaftTransportClient(channel);

        // Wrong secret, wrong cluster id, no credentials at all.
        await AssertStatus(StatusCode.Unauthenticated, "secret", () => cache.ExecuteOneAsync(Commands.Set("x", "1"), LocalCluster.Headers(cluster.ClusterId, "wrong")).ResponseAsync);
        await AssertStatus(StatusCode.PermissionDenied, "cluster id", () => cache.ExecuteOneAsync(Commands.Set("x", "1"), LocalCluster.Headers("other-cluster")).ResponseAsync);
        await AssertStatus(StatusCode.PermissionDenied, "cluster id", () => cache.ExecuteOneAsync(Commands.Set("x", "1")).ResponseAsync);
        await AssertStatus(StatusCode.Unauthenticated, "secret", () => SendRaftAsync(raft, LocalCluster.Headers(cluster.ClusterId, "wrong"), from: 2, Heartbeat(2, leader, term: 1)));

        // A message whose sender disagrees with its stream, a malformed message. (A node this one has never heard of
        // is heard, since it may have joined while this node was down: its stale heartbeat below changes nothing.)
        await SendRaftAsync(raft, cluster.Auth, from: 99, Heartbeat(99, leader, term: 1));
        var peer = cluster.Nodes.Keys.First(id => id != leader);
        await AssertStatus(StatusCode.InvalidArgument, "claims to come from", () => SendRaftAsync(raft, cluster.Auth, from: peer, Heartbeat(3 - peer + 2, leader, term: 1)));
        var malformed = new Wire.RaftMessage { Type = Wire.MessageType.Append, From = peer, To = leader, Term = before.Term, Index = 5 };
        malformed.Entries.Add(new Wire.Entry { Index = 9, Term = before.Term, Type = Wire.EntryType.Normal });
        await AssertStatus(StatusCode.InvalidArgument, "not contiguous", () => SendRaftAsync(raft, cluster.Auth, from: peer, malformed));
        await AssertStatus(StatusCode.InvalidArgument, "unknown message type", () => SendRaftAsync(raft, cluster.Auth, from: peer, new Wire.RaftMessage { Type = (Wire.MessageType)77, From = peer, To = leader, Term = 1 }));

        // A stale-term message from a real peer is accepted by the transport and ignored by Raft.
        await SendRaftAsync(raft, cluster.Auth, from: peer, Heartbeat(peer, leader, term: 1));

        // A message larger than the node accepts.
        var huge = Commands.Set("huge", new string('h', 20 * 1024 * 1024));
        await AssertStatus(StatusCode.ResourceExhausted, "", () => cache.ExecuteOneAsync(huge, cluster.Auth).ResponseAsync);

        // Bytes that are not a protobuf message at all.
        var raw = new Method<byte[], byte[]>(MethodType.Unary, "dcache.cache.v1.Cache", "ExecuteOne", Marshallers.Create(b => b, b => b), Marshallers.Create(b => b, b => b));
        var invoker = channel.CreateCallInvoker();
        var garbage = new byte[] { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02 };
        var garbageStatus = await Assert.ThrowsAsync<RpcException>(() => invoker.AsyncUnaryCall(raw, null, new CallOptions(cluster.Auth), garbage).ResponseAsync);
        Assert.NotEqual(StatusCode.OK, garbageStatus.StatusCode);

        // A command without an operation, and a nonsensical one: refused as invalid, not applied.
        var empty = await cache.ExecuteOneAsync(new Command { Id = 5 }, cluster.Auth);
        Assert.Equal(FailureKind.InvalidRequest, empty.Failure.Kind);
        var badTtl = await cache.ExecuteOneAsync(Commands.Set("x", "1", ttlMs: -5), cluster.Auth);
        Assert.StartsWith("ERR invalid expire time", badTtl.Error, StringComparison.Ordinal);

        // Nothing changed: same leader and term, same state.
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(10));
        var after = await cluster.StatusAsync(leader, digest: true);
        Assert.Equal(before.Term, after.Term);
        Assert.Equal("Leader", after.Role);
        Assert.Equal(before.StateDigest, after.StateDigest);
        Assert.Equal(0, (await cluster.ExecuteAsync(leader, new Command { Id = 6, Exists = new ExistsRequest { Keys = { ByteString.CopyFromUtf8("x"), ByteString.CopyFromUtf8("huge") } } })).Integer);
    }

    private static Wire.RaftMessage Heartbeat(ulong from, ulong to, ulong term) =>
        new() { Type = Wire.MessageType.Heartbeat, From = from, To = to, Term = term };

    private static async Task SendRaftAsync(Wire.RaftTransport.RaftTransportClient client, Metadata headers, ulong from, Wire.RaftMessage message)
    {
        var withFrom = new Metadata();
        foreach (var entry in headers)
        {
            withFrom.Add(entry);
        }

        withFrom.Add("dcache-from", from.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var call = client.Send(withFrom, DateTime.UtcNow.AddSeconds(5));
        try
        {
            await call.RequestStream.WriteAsync(message);
            await call.RequestStream.CompleteAsync();
        }
        catch (RpcException)
        {
            // The server may refuse the call before the write lands; the call's own status says why.
        }

        await call.ResponseAsync;
    }

    private static async Task AssertStatus(StatusCode expected, string detail, Func<Task> call)
    {
        var error = await Assert.ThrowsAsync<RpcException>(call);
        Assert.Equal(expected, error.StatusCode);
        Assert.Contains(detail, error.Status.Detail, StringComparison.OrdinalIgnoreCase);
    }
}
