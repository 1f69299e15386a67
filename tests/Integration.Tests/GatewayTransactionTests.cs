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

        // Conditions: the library WATCHes their keys, checks them, and sends MULTI/EXEC (or UNWATCH when one fails).
        var conditional = db.CreateTransaction();
        conditional.AddCondition(Condition.KeyExists("a"));
        conditional.AddCondition(Condition.StringEqual("a", "42"));
        conditional.AddCondition(Condition.KeyNotExists("b"));
        var conditionalSet = conditional.StringSetAsync("b", "set");
        Assert.True(await conditional.ExecuteAsync());
        Assert.True(await conditionalSet);
        Assert.Equal("set", (string?)await db.StringGetAsync("b"));

        var unmet = db.CreateTransaction();
        unmet.AddCondition(Condition.StringEqual("a", "41"));
        _ = unmet.StringSetAsync("b", "never");
        Assert.False(await unmet.ExecuteAsync());
        Assert.Equal("set", (string?)await db.StringGetAsync("b"));

        var (exit, cli) = await RedisTools.RedisCliScriptAsync(cluster.GatewayPort, "MULTI", "SET c 5", "INCRBY c 10", "GET c", "TTL c", "EXEC", "DISCARD", "GET c");
        Assert.Equal(0, exit);
        Assert.Equal("OK\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nOK\n15\n15\n-1\nERR DISCARD without MULTI\n\n15\n", cli);
    }

    [Fact]
    public async Task CheckAndSetRacesNeverLoseAnIncrement()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        // Each client: WATCH k, GET k, MULTI, SET k (v + 1), EXEC, again on nil. Every EXEC that applied must show in
        // the final count, and only those: a missed change would apply an increment computed from a stale value.
        const int Clients = 6;
        const int IncrementsPerClient = 15;
        var attempts = 0;
        var clients = Enumerable.Range(0, Clients).Select(_ => Task.Run(async () =>
        {
            using var client = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
            var applied = 0;
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (applied < IncrementsPerClient && DateTime.UtcNow < deadline)
            {
                Interlocked.Increment(ref attempts);
                Assert.Equal("+OK", (await client.CommandAsync(Args("WATCH", "k"))).ToString());
                var current = await client.CommandAsync(Args("GET", "k"));
                var value = current.Bytes is null ? 0 : long.Parse(current.Text!, System.Globalization.CultureInfo.InvariantCulture);
                Assert.Equal("+OK", (await client.CommandAsync(Args("MULTI"))).ToString());
                Assert.Equal("+QUEUED", (await client.CommandAsync(Args("SET", "k", (value + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)))).ToString());
                var exec = (await client.CommandAsync(Args("EXEC"))).ToString();
                if (exec == "*[+OK]")
                {
                    applied++;
                }
                else
                {
                    Assert.Equal("*nil", exec);
                }
            }

            return applied;
        })).ToArray();

        var successes = (await Task.WhenAll(clients)).Sum();
        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var final = (long)await redis.GetDatabase().StringGetAsync("k");
        output.WriteLine($"{successes} EXECs applied in {attempts} attempts; final value {final}");
        Assert.Equal(Clients * IncrementsPerClient, successes);
        Assert.Equal(successes, final);
        Assert.True(attempts > successes, "the clients never raced (no EXEC answered nil): the test proved nothing");
    }

    private static byte[][] Args(params string[] arguments) => arguments.Select(System.Text.Encoding.UTF8.GetBytes).ToArray();

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
