using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Gateway.Tests;

/// <summary>A gateway started with LocalReads serves every read locally, whether sent alone or in a pipeline wave.</summary>
public sealed class LocalReadsClusterTests
{
    [Fact]
    public async Task EveryReadOfAWaveIsServedLocallyAndEveryCallGetsItsReply()
    {
        var inner = new FakeCacheCluster();
        inner.Put("a", "1");
        var cluster = new LocalReadsCluster(inner);

        ClusterCall[] calls =
        [
            new(new Command { Get = new GetRequest { Key = ByteString.CopyFromUtf8("a") } }, ReadMode.Linearizable),
            new(new Command { Set = new SetRequest { Key = ByteString.CopyFromUtf8("b"), Value = ByteString.CopyFromUtf8("2") } }, ReadMode.Linearizable),
            new(new Command { Exists = new ExistsRequest { Keys = { ByteString.CopyFromUtf8("a") } } }, ReadMode.Linearizable),
        ];
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("1", replies[0].Bulk.ToStringUtf8());
        Assert.True(replies[1].Ok);
        Assert.Equal(1, replies[2].Integer);
        Assert.All(inner.Executed, executed => Assert.Equal(ReadMode.Local, executed.Mode));
        Assert.Equal(3, inner.Executed.Count);

        var single = await cluster.ExecuteAsync(new Command { Get = new GetRequest { Key = ByteString.CopyFromUtf8("b") } }, ReadMode.Linearizable, CancellationToken.None);
        Assert.Equal("2", single.Bulk.ToStringUtf8());
        Assert.Equal(ReadMode.Local, inner.Executed[^1].Mode);
    }
}
