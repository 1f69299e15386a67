using System.Diagnostics;
using Dcache.Gateway.Tests.Support;
using StackExchange.Redis;

namespace Dcache.Gateway.Tests;

/// <summary>Real clients over a real socket against the front end (the cluster is the in-memory fake).</summary>
public sealed class RealClientTests
{
    [Fact]
    public async Task StackExchangeRedisConnectsWithDefaultOptionsAndRunsCommands()
    {
        await using var gateway = await KestrelGateway.StartAsync();
        var log = new StringWriter();
        await using var redis = await ConnectionMultiplexer.ConnectAsync(gateway.Endpoint, log);
        Assert.True(redis.IsConnected, log.ToString());
        var server = redis.GetServer(gateway.Endpoint);
        Assert.False(server.IsReplica);
        Assert.Equal(new Version(7, 0, 15), server.Version);

        var db = redis.GetDatabase();
        Assert.True(await db.StringSetAsync("k", "v", TimeSpan.FromSeconds(100)));
        Assert.Equal("v", await db.StringGetAsync("k"));
        Assert.False(await db.StringSetAsync("k", "w", when: When.NotExists));
        Assert.True(await db.KeyExistsAsync("k"));
        var ttl = await db.KeyTimeToLiveAsync("k");
        Assert.InRange(ttl!.Value.TotalSeconds, 90, 100);
        Assert.Equal(1, await db.StringIncrementAsync("n"));
        Assert.Equal(11, await db.StringIncrementAsync("n", 10));
        Assert.True(await db.KeyExpireAsync("n", TimeSpan.FromSeconds(50)));
        Assert.True(await db.StringSetAsync([new("a", "1"), new("b", "2")]));
        Assert.Equal(["1", "2", null], (await db.StringGetAsync(["a", "b", "missing"])).Select(v => (string?)v));
        Assert.True(await db.KeyDeleteAsync("a"));

        // A pipelined batch: 200 commands sent together, answered in order.
        var batch = db.CreateBatch();
        var sets = Enumerable.Range(0, 100).Select(i => batch.StringSetAsync($"p{i}", i)).ToList();
        var gets = Enumerable.Range(0, 100).Select(i => batch.StringGetAsync($"p{i}")).ToList();
        batch.Execute();
        await Task.WhenAll(sets);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (RedisValue)i), await Task.WhenAll(gets));

        // A value far larger than Kestrel's input buffer is consumed as it arrives.
        var large = new byte[8 * 1024 * 1024];
        new Random(8).NextBytes(large);
        Assert.True(await db.StringSetAsync("large", large));
        Assert.Equal(large, (byte[]?)await db.StringGetAsync("large"));

        // Its pub/sub connection (configuration channel) is accepted too.
        var subscriber = redis.GetSubscriber();
        await subscriber.SubscribeAsync(RedisChannel.Literal("some-channel"), (_, _) => { });
        Assert.True(subscriber.IsConnected());
        Assert.True(redis.GetServer(gateway.Endpoint).IsConnected);
    }

    [Fact]
    public async Task StackExchangeRedisListsKeysWithScan()
    {
        await using var gateway = await KestrelGateway.StartAsync();
        await using var redis = await ConnectionMultiplexer.ConnectAsync(gateway.Endpoint);
        var db = redis.GetDatabase();
        Assert.True(await db.StringSetAsync([.. Enumerable.Range(0, 120).Select(i => new KeyValuePair<RedisKey, RedisValue>((i % 2 == 0 ? "even:" : "odd:") + i, i))]));

        // IServer.Keys pages through SCAN (KEYS only on servers before 2.8), pageSize being SCAN's COUNT.
        var server = redis.GetServer(gateway.Endpoint);
        var evens = server.Keys(pattern: "even:*", pageSize: 7).Select(key => (string)key!).ToList();
        Assert.Equal(Enumerable.Range(0, 60).Select(i => "even:" + (2 * i)).Order(StringComparer.Ordinal), evens.Order(StringComparer.Ordinal));
        Assert.Equal(120, await server.KeysAsync(pageSize: 1000).CountAsync());
        Assert.Contains(gateway.Cluster.Executed, executed => executed.Command.Scan is { Count: 7 });
    }

    [Fact]
    public async Task StackExchangeRedisAuthenticatesAndSpeaksResp3()
    {
        await using var gateway = await KestrelGateway.StartAsync(o => o.RequirePass = "pw");
        var options = ConfigurationOptions.Parse(gateway.Endpoint);
        options.Password = "pw";
        options.Protocol = RedisProtocol.Resp3;
        await using var redis = await ConnectionMultiplexer.ConnectAsync(options);
        Assert.Equal(RedisProtocol.Resp3, redis.GetServer(gateway.Endpoint).Protocol);
        var db = redis.GetDatabase();
        Assert.True(await db.StringSetAsync("k", "v"));
        Assert.Equal("v", await db.StringGetAsync("k"));
        Assert.True((await db.StringGetAsync("missing")).IsNull);

        options.Password = "wrong";
        options.AbortOnConnectFail = true;
        options.ConnectTimeout = 2000;
        await Assert.ThrowsAsync<RedisConnectionException>(() => ConnectionMultiplexer.ConnectAsync(options));
    }

    [Fact]
    public async Task RedisCliWorks()
    {
        // redis-cli is installed with the test command (test.sh): without it this fails rather than passes unchecked.
        await using var gateway = await KestrelGateway.StartAsync();
        Assert.Equal("OK", await RedisCli(gateway, "SET", "k", "hello world"));
        Assert.Equal("hello world", await RedisCli(gateway, "GET", "k"));
        Assert.Equal("1", await RedisCli(gateway, "EXISTS", "k"));
        Assert.Equal("PONG", await RedisCli(gateway, "PING"));
        Assert.Contains("role:master", await RedisCli(gateway, "INFO", "replication"), StringComparison.Ordinal);

        Assert.Equal("1\n2\n3", await RedisCli(gateway, "-r", "3", "INCR", "n"));
    }

    private static async Task<string> RedisCli(KestrelGateway gateway, params string[] arguments)
    {
        var start = new ProcessStartInfo("redis-cli") { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add("-p");
        start.ArgumentList.Add(gateway.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start redis-cli; test.sh installs redis-tools");
        try
        {
            using var timeout = new CancellationTokenSource(TestConnection.Timeout);
            var output = await process.StandardOutput.ReadToEndAsync(timeout.Token);
            await process.WaitForExitAsync(timeout.Token);
            return output.TrimEnd('\n');
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }

    [Fact]
    public async Task AClientThatReadsNothingIsDisconnectedOnceItsRepliesPassTheOutputBufferLimit()
    {
        await using var gateway = await KestrelGateway.StartAsync(o => o.MaxOutputBufferBytes = 1024 * 1024);
        gateway.Cluster.Put("v", new string('x', 100_000));

        // 30 MB of replies, far past what the kernel's socket buffers and Kestrel's take in, to a client that never reads.
        using var client = await NonReadingClient.OpenAsync(gateway, "v", gets: 300, TestConnection.Timeout);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (gateway.Clients.ConnectedClients > 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the gateway kept a client that read none of its replies past the output buffer limit");
            await Task.Delay(20);
        }
    }
}
