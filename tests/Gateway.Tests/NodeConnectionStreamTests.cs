using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Gateway.Tests;

/// <summary>A node connection's command stream across breaks: what is sent after a break reaches the reopened stream.</summary>
public sealed class NodeConnectionStreamTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ACommandSentRightAfterTheStreamBrokeIsAnsweredOnTheReopenedStream()
    {
        // The node ends the stream with an error at every command for "break" and answers the rest.
        await using var node = await ScriptedNode.StartAsync(command =>
            command.Get?.Key.ToStringUtf8() == "break" ? null : CacheClusterBatchTests.Answer("node")(command));
        var options = new ClusterOptions
        {
            Nodes = node.Address,
            StreamsPerNode = 1,
            // Long enough never to run out on a loaded machine while the node answers; a command lost between two
            // streams is answered by nothing else.
            AttemptTimeoutMilliseconds = 10_000,
            BreakAfterFailures = 1_000,
            ClusterSecret = "secret",
        };
        await using var connection = new NodeConnection(node.Address, isSeed: true, new Metadata(), options, new CommandIds(), NullLogger.Instance);

        // After each break the connection waits before it reopens the stream (10 ms, doubling while breaks follow each
        // other with no reply between them): the command sent right after a break arrives while it waits, the case
        // where it was taken by the broken stream's writer.
        for (var round = 0; round < 8; round++)
        {
            var broken = new Reply?[1];
            var breaking = connection.AttemptAsync([CacheClusterBatchTests.Get("break")], broken, CancellationToken.None);
            await Assert.ThrowsAsync<NodeUnreachableException>(() => breaking.WaitAsync(Patience));

            var replies = new Reply?[1];
            await connection.AttemptAsync([CacheClusterBatchTests.Get($"after-{round}")], replies, CancellationToken.None).WaitAsync(Patience);
            Assert.Equal($"node:after-{round}", replies[0]?.Bulk.ToStringUtf8());
        }

        Assert.Equal(0, connection.CommandsSent);
        Assert.Equal(0, connection.CommandsQueued);

        // Every stream but the first answered a command before it broke: each break was a new one, so the connection
        // reopened after the first delay every time, not after the longest one (10 ms doubled seven times, capped at 0.5 s).
        Assert.Equal(TimeSpan.FromMilliseconds(10), connection.LongestLastReconnectDelay);
    }
}
