using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>MULTI/EXEC through real clients on a real 3-node cluster: one log entry per transaction, nothing between its commands.</summary>
public sealed class GatewayTransactionTests(ITestOutputHelper output)
{
    [Fact]
    public async Task StackExchangeRedisTransactionsAndRedisCliMultiExecApplyTheirCommandsTogether()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = redis.GetDatabase();
        await db.StringSetAsync("text", "abc");

        var transaction = db.CreateTransaction();
        var set = transaction.StringSetAsync("a", "1");
        var incremented = transaction.StringIncrementAsync("a", 41);
        var read = transaction.StringGetAsync(["a", "missing"]);
        var failed = transaction.StringIncrementAsync("text");
        var length = transaction.StringAppendAsync("text", "def");
        Assert.True(await transaction.ExecuteAsync());
        Assert.True(await set);
        Assert.Equal(42, await incremented);
        Assert.Equal(["42", null], (await read).Select(value => (string?)value));
        var error = await Assert.ThrowsAsync<RedisServerException>(() => failed);
        Assert.Contains("not an integer", error.Message, StringComparison.Ordinal);
        Assert.Equal(6, await length);
        Assert.Equal("abcdef", (string?)await db.StringGetAsync("text"));

        // A condition needs WATCH, which is refused, and so is the EXEC after it: the library sends WATCH, checks the
        // condition and sends MULTI/EXEC whatever WATCH answered, and the transaction must not apply unchecked.
        var conditional = db.CreateTransaction();
        conditional.AddCondition(Condition.KeyExists("a"));
        _ = conditional.StringSetAsync("b", "never");
        var refused = await Assert.ThrowsAnyAsync<RedisException>(() => conditional.ExecuteAsync());
        output.WriteLine($"conditional transaction: {refused.Message}");
        Assert.False(await db.KeyExistsAsync("b"));

        var (exit, cli) = await RedisTools.RedisCliScriptAsync(cluster.GatewayPort, "MULTI", "SET c 5", "INCRBY c 10", "GET c", "TTL c", "EXEC", "DISCARD", "GET c");
        Assert.Equal(0, exit);
        Assert.Equal("OK\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nOK\n15\n15\n-1\nERR DISCARD without MULTI\n\n15\n", cli);
    }

    [Fact]
    public async Task ConcurrentTransactionsIncrementingTwoKeysNeverLetAReaderSeeThemDiffer()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        const int Writers = 4;
        const int TransactionsPerWriter = 40;
        // A connection each: commands of one connection are ordered by the gateway's pipeline, so a reader sharing the
        // writers' connection could never fall between two of their writes anyway.
        await using var reader = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = reader.GetDatabase();
        var writers = Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            await using var writer = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
            var writes = writer.GetDatabase();
            for (var i = 0; i < TransactionsPerWriter; i++)
            {
                var transaction = writes.CreateTransaction();
                var a = transaction.StringIncrementAsync("a");
                var b = transaction.StringIncrementAsync("b");
                Assert.True(await transaction.ExecuteAsync());
                Assert.Equal(await a, await b);
            }
        })).ToArray();

        // MGET is one read: between two separate entries it would see a ahead of b.
        var reads = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (!writers.All(writer => writer.IsCompleted) && DateTime.UtcNow < deadline)
        {
            var values = await db.StringGetAsync(["a", "b"]);
            Assert.True((long?)values[0] == (long?)values[1], $"a = {values[0]}, b = {values[1]}");
            reads++;
        }

        await Task.WhenAll(writers);
        output.WriteLine($"{reads} reads while {Writers * TransactionsPerWriter} transactions applied");
        Assert.Equal([Writers * TransactionsPerWriter, Writers * TransactionsPerWriter], (await db.StringGetAsync(["a", "b"])).Select(value => (long)value));
        Assert.True(reads > 0);
    }
}
