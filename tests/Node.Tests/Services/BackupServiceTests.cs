using Dcache.Node.Services;
using Dcache.Node.Tests.Consensus;
using Dcache.Node.Tests.Transport;
using Dcache.Node.Transport;
using Dcache.Protocol;
using Dcache.Protocol.Backup;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Dcache.Node.Tests.Services;

/// <summary>
/// `dcachectl snapshot save` is consistent: the node first confirms a read index, so the state it captures holds every
/// write acknowledged before the call. A node that cannot confirm one (it knows no leader, it is cut off) must refuse,
/// not stream whatever stale state it holds as if it were the cluster's.
/// </summary>
public sealed class BackupServiceTests
{
    [Fact]
    public async Task A_node_that_cannot_confirm_a_read_index_refuses_the_save_and_streams_nothing()
    {
        await using var node = PeerlessNode.Start();
        var credentials = new ClusterCredentials("test", "secret");
        var builder = GrpcTestServer.CreateBuilder();
        builder.Services.AddSingleton(node.Driver);
        builder.Services.AddSingleton(node.Addresses);
        builder.Services.AddSingleton(credentials);
        builder.Services.AddGrpc();
        await using var app = builder.Build();
        app.MapGrpcService<BackupService>();
        await app.StartAsync();
        try
        {
            using var channel = GrpcChannels.ForNode($"http://127.0.0.1:{GrpcTestServer.PortOf(app)}");
            using var call = new Backup.BackupClient(channel).SaveSnapshot(new SaveSnapshotRequest(), credentials.ToHeaders(), DateTime.UtcNow.AddSeconds(30));

            var parts = new List<SnapshotPart>();
            var refusal = await Assert.ThrowsAsync<RpcException>(async () =>
            {
                await foreach (var part in call.ResponseStream.ReadAllAsync())
                {
                    parts.Add(part);
                }
            });

            Assert.Equal(StatusCode.Unavailable, refusal.StatusCode);
            Assert.Contains("cannot take a consistent snapshot", refusal.Status.Detail, StringComparison.Ordinal);
            Assert.Empty(parts);
        }
        finally
        {
            await app.StopAsync();
        }
    }
}
