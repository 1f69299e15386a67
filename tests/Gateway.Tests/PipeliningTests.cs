using System.Globalization;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

/// <summary>Pipelined requests: concurrent where keys allow, replies always in request order, one session per write in flight.</summary>
public sealed class PipeliningTests
{
    private static byte[] Pipeline(params string[][] commands) => commands.SelectMany(TestConnection.Encode).ToArray();

    private static async Task<List<string>> ReadRepliesAsync(TestConnection client, int count)
    {
        var replies = new List<string>();
        for (var i = 0; i < count; i++)
        {
            replies.Add((await client.ReadAsync()).ToString());
        }

        return replies;
    }

    private static string Key(int i) => "key" + i.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task EveryCommandOfABatchOnDistinctKeysIsInFlightAtOnce()
    {
        var server = new TestServer();
        server.Cluster.Hold();
        await using var client = server.Connect();
        var commands = Enumerable.Range(0, 16).Select(i => i % 2 == 0 ? new[] { "SET", Key(i), "v" + i } : ["GET", Key(i)]).ToArray();
        await client.SendAsync(Pipeline(commands));

        // All 16 reach the cluster before any has replied: one round of cluster batching, not 16 round trips.
        await server.Cluster.WaitForInFlightAsync(16, TestConnection.Timeout);
        server.Cluster.Release();
        for (var i = 0; i < 16; i++)
        {
            Assert.Equal(i % 2 == 0 ? "+OK" : "$nil", (await client.ReadAsync()).ToString());
        }
    }

    [Fact]
    public async Task RepliesComeInRequestOrderWhateverOrderTheClusterAnswers()
    {
        var server = new TestServer();
        for (var i = 0; i < 64; i++)
        {
            server.Cluster.Put(Key(i), "value" + i);
        }

        server.Cluster.ShuffleCompletions = true;
        await using var client = server.Connect();
        for (var round = 0; round < 5; round++)
        {
            server.Cluster.Hold();
            await client.SendAsync(Pipeline(Enumerable.Range(0, 64).Select(i => new[] { "GET", Key(i) }).ToArray()));
            await server.Cluster.WaitForInFlightAsync(64, TestConnection.Timeout);
            server.Cluster.Release();
            for (var i = 0; i < 64; i++)
            {
                Assert.Equal("$value" + i, (await client.ReadAsync()).ToString());
            }
        }
    }

    [Fact]
    public async Task ACommandOnAKeyWrittenEarlierInTheBatchWaitsForThatWrite()
    {
        var server = new TestServer();
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["SET", "a", "1"], ["SET", "b", "2"], ["GET", "a"], ["SET", "c", "3"], ["INCR", "a"], ["GET", "a"]));

        await server.Cluster.WaitForInFlightAsync(2, TestConnection.Timeout);

        // GET a conflicts with the in-flight SET a, so nothing after it has been started yet.
        Assert.Equal(["a", "b"], server.Cluster.Executed.Select(e => e.Command.Set.Key.ToStringUtf8()));
        server.Cluster.Release();
        Assert.Equal(["+OK", "+OK", "$1", "+OK", ":2", "$2"], await ReadRepliesAsync(client, 6));
    }

    [Fact]
    public async Task KeyspaceReadsWaitForEarlierWritesInTheBatch()
    {
        var server = new TestServer();
        server.Cluster.ShuffleCompletions = true;
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["SET", "a", "1"], ["SET", "b", "2"], ["DBSIZE"], ["DEL", "a"], ["DBSIZE"]));
        await server.Cluster.WaitForInFlightAsync(2, TestConnection.Timeout);
        Assert.Equal(2, server.Cluster.Executed.Count);
        server.Cluster.Release();
        Assert.Equal(["+OK", "+OK", ":2", ":1", ":1"], await ReadRepliesAsync(client, 5));
    }

    [Fact]
    public async Task FlushallWaitsForEveryEarlierCommandEvenAReadOfAnotherKey()
    {
        var server = new TestServer();
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["SET", "a", "1"], ["GET", "b"], ["FLUSHALL"]));
        await server.Cluster.WaitForInFlightAsync(2, TestConnection.Timeout);
        Assert.Equal(2, server.Cluster.Executed.Count);
        server.Cluster.Release();
        Assert.Equal(["+OK", "$nil", "+OK"], await ReadRepliesAsync(client, 3));
        Assert.Equal(0, server.Cluster.KeyCount);
    }

    [Fact]
    public async Task EveryCommandAfterFlushallWaitsForIt()
    {
        var server = new TestServer();
        server.Cluster.Put("a", "1");
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["FLUSHALL"], ["GET", "a"], ["SET", "c", "3"], ["KEYS", "*"]));
        await server.Cluster.WaitForInFlightAsync(1, TestConnection.Timeout);
        Assert.Equal([Dcache.Protocol.Cache.Command.OpOneofCase.Flushall], server.Cluster.Executed.Select(e => e.Command.OpCase));
        server.Cluster.Release();

        // KEYS, a keyspace read, also waited for SET c.
        Assert.Equal(["+OK", "$nil", "+OK", "*[$c]"], await ReadRepliesAsync(client, 4));
    }

    [Fact]
    public async Task ACommandOnTheLastKeyOfAnEarlierMultiKeyWriteWaitsForIt()
    {
        var server = new TestServer();
        server.Cluster.Put("b", "1");
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["DEL", "a", "b"], ["GET", "b"]));
        await server.Cluster.WaitForInFlightAsync(1, TestConnection.Timeout);
        Assert.Single(server.Cluster.Executed);
        server.Cluster.Release();
        Assert.Equal([":1", "$nil"], await ReadRepliesAsync(client, 2));
    }

    [Fact]
    public async Task RenameOrdersAfterEarlierCommandsOnEitherKey()
    {
        var server = new TestServer();
        server.Cluster.Put("a", "1");
        server.Cluster.Hold();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["GET", "b"], ["RENAME", "a", "b"], ["GET", "b"]));
        await server.Cluster.WaitForInFlightAsync(1, TestConnection.Timeout);
        Assert.Single(server.Cluster.Executed);
        server.Cluster.Release();
        Assert.Equal(["$nil", "+OK", "$1"], await ReadRepliesAsync(client, 3));
    }

    [Fact]
    public async Task ConcurrentPipelinedWritesNeverShareASessionInFlight()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        for (var round = 0; round < 3; round++)
        {
            server.Cluster.Hold();
            await client.SendAsync(Pipeline(Enumerable.Range(0, 50).Select(i => new[] { "INCR", Key(i) }).ToArray()));
            await server.Cluster.WaitForInFlightAsync(50, TestConnection.Timeout);
            server.Cluster.Release();
            for (var i = 0; i < 50; i++)
            {
                Assert.Equal(":" + (round + 1), (await client.ReadAsync()).ToString());
            }
        }

        Assert.Empty(server.Cluster.SessionViolations);

        // 50 writes in flight need 50 sessions; later rounds reuse them with the next sequence numbers.
        var sessions = server.Cluster.Executed.GroupBy(e => e.Command.ClientId).ToList();
        Assert.Equal(50, sessions.Count);
        Assert.All(sessions, session => Assert.Equal([1UL, 2UL, 3UL], session.Select(e => e.Command.Sequence).Order()));
    }

    [Fact]
    public async Task ConnectionsInFlightTogetherNeverShareASession()
    {
        var server = new TestServer();
        await using var first = server.Connect();
        await using var second = server.Connect();
        server.Cluster.Hold();
        await first.SendAsync(Pipeline(["SET", "a", "1"]));
        await second.SendAsync(Pipeline(["SET", "b", "1"]));
        await server.Cluster.WaitForInFlightAsync(2, TestConnection.Timeout);
        server.Cluster.Release();
        Assert.Equal("+OK", (await first.ReadAsync()).ToString());
        Assert.Equal("+OK", (await second.ReadAsync()).ToString());
        var ids = server.Cluster.Executed.Select(e => e.Command.ClientId).ToList();
        Assert.NotEqual(ids[0], ids[1]);
        Assert.DoesNotContain(0UL, ids);
        Assert.Empty(server.Cluster.SessionViolations);
    }

    [Fact]
    public async Task AClosedConnectionsSessionServesTheNextConnectionSoShortLivedClientsDoNotPileUpSessions()
    {
        var server = new TestServer();
        for (var i = 0; i < 5; i++)
        {
            await using var client = server.Connect();
            Assert.Equal("+OK", (await client.CommandAsync("SET", "k", "v" + i)).ToString());
        }

        var writes = server.Cluster.Executed.Select(e => (e.Command.ClientId, e.Command.Sequence)).ToList();
        Assert.Single(writes.Select(w => w.ClientId).Distinct());
        Assert.Equal([1UL, 2UL, 3UL, 4UL, 5UL], writes.Select(w => w.Sequence));
    }

    [Fact]
    public async Task BatchesLongerThanThePipelineDepthAreServedInOrder()
    {
        var server = new TestServer(o => o.MaxPipelineDepth = 3);
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(Enumerable.Range(0, 20).Select(i => new[] { "ECHO", "m" + i }).ToArray()));
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal("$m" + i, (await client.ReadAsync()).ToString());
        }
    }

    [Fact]
    public async Task ConnectionStateChangesApplyToLaterCommandsOfTheSameBatchOnly()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        await client.SendAsync(Pipeline(["GET", "a"], ["READONLY"], ["GET", "b"], ["HELLO", "3"], ["GET", "c"], ["READWRITE"], ["GET", "d"]));
        Assert.Equal("$nil", (await client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.Equal("$nil", (await client.ReadAsync()).ToString());
        Assert.Equal('%', (await client.ReadAsync()).Type);
        Assert.Equal("_", (await client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.Equal("_", (await client.ReadAsync()).ToString());
        var modes = server.Cluster.Executed.Select(e => (e.Command.Get.Key.ToStringUtf8(), e.Mode)).OrderBy(e => e.Item1).Select(e => e.Mode.ToString());
        Assert.Equal(["Linearizable", "Local", "Local", "Linearizable"], modes);
    }
}
