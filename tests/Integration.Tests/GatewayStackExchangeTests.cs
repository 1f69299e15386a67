using System.Globalization;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>StackExchange.Redis, unmodified and with default options, through the gateway.</summary>
public sealed class GatewayStackExchangeTests(ITestOutputHelper output)
{
    [Fact]
    public async Task StackExchangeRedisConnectsWithDefaultOptionsAndDrivesTheCommonCommands()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = redis.GetDatabase();

        Assert.True(await db.StringSetAsync("greeting", "hello"));
        Assert.Equal("hello", (string?)await db.StringGetAsync("greeting"));
        Assert.False(await db.StringSetAsync("greeting", "again", when: When.NotExists));
        Assert.True(await db.StringSetAsync("fresh", "x", when: When.NotExists));
        Assert.False(await db.StringSetAsync("absent", "x", when: When.Exists));
        Assert.True(await db.StringSetAsync("expiring", "soon", expiry: TimeSpan.FromSeconds(100)));
        var ttl = await db.KeyTimeToLiveAsync("expiring");
        Assert.InRange(ttl!.Value.TotalSeconds, 90, 100);
        Assert.Equal("hello", (string?)await db.StringSetAndGetAsync("greeting", "replaced"));

        Assert.True(await db.KeyExistsAsync("greeting"));
        Assert.Equal(2, await db.KeyExistsAsync(["greeting", "fresh", "nope"]));
        Assert.Equal(1, await db.StringIncrementAsync("counter"));
        Assert.Equal(11, await db.StringIncrementAsync("counter", 10));
        Assert.Equal(9, await db.StringDecrementAsync("counter", 2));

        Assert.True(await db.KeyExpireAsync("counter", TimeSpan.FromSeconds(50)));
        Assert.InRange((await db.KeyTimeToLiveAsync("counter"))!.Value.TotalSeconds, 40, 50);
        Assert.Null(await db.KeyTimeToLiveAsync("fresh"));

        Assert.True(await db.StringSetAsync([new("m1", "a"), new("m2", "b")]));
        var values = await db.StringGetAsync(["m1", "m2", "missing"]);
        Assert.Equal(["a", "b", null], values.Select(v => (string?)v));

        Assert.True(await db.KeyDeleteAsync("fresh"));
        Assert.Equal(2, await db.KeyDeleteAsync(["m1", "m2", "missing"]));

        // The string and key commands beyond the first set, as the client library calls them.
        Assert.True(await db.StringSetAsync("text", "Hello"));
        Assert.Equal(10, await db.StringAppendAsync("text", "World"));
        Assert.Equal(10, await db.StringLengthAsync("text"));
        Assert.Equal("World", (string?)await db.StringGetRangeAsync("text", 5, -1));
        Assert.Equal(RedisType.String, await db.KeyTypeAsync("text"));
        Assert.Equal(RedisType.None, await db.KeyTypeAsync("nope"));
        Assert.True(await db.KeyTouchAsync("text"));
        Assert.True(await db.KeyRenameAsync("text", "renamed"));
        Assert.False(await db.KeyRenameAsync("greeting", "renamed", When.NotExists));
        Assert.Equal("HelloWorld", (string?)await db.StringGetDeleteAsync("renamed"));
        Assert.False(await db.KeyExistsAsync("renamed"));
        Assert.Equal(2.5, await db.StringIncrementAsync("float", 2.5));
        Assert.Equal(3, await db.StringIncrementAsync("float", 0.5));
        Assert.Equal("soon", (string?)await db.StringGetSetExpiryAsync("expiring", TimeSpan.FromSeconds(200)));
        Assert.InRange((await db.KeyExpireTimeAsync("expiring"))!.Value, DateTime.UtcNow.AddSeconds(190), DateTime.UtcNow.AddSeconds(210));
        Assert.Null(await db.KeyExpireTimeAsync("float"));

        // A pipelined batch: sent together, answered in order.
        var batch = db.CreateBatch();
        var sets = Enumerable.Range(0, 100).Select(i => batch.StringSetAsync($"batch:{i}", i)).ToList();
        var incr = batch.StringIncrementAsync("batch:counter", 5);
        var gets = Enumerable.Range(0, 100).Select(i => batch.StringGetAsync($"batch:{i}")).ToList();
        batch.Execute();
        Assert.All(await Task.WhenAll(sets), Assert.True);
        Assert.Equal(5, await incr);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => (RedisValue)i), await Task.WhenAll(gets));

        // Errors come back as Redis words them.
        var error = await Assert.ThrowsAsync<RedisServerException>(() => db.StringIncrementAsync("greeting"));
        Assert.Equal("ERR value is not an integer or out of range", error.Message);

        // MGET and EXISTS of more keys than a node looks up in one round (4,096): taken a slice at a time on the node.
        var many = Enumerable.Range(0, 10_000).Select(i => (RedisKey)$"batch:{i % 150}").ToArray();
        Assert.Equal(many.Select(key => int.Parse(key.ToString()[6..], CultureInfo.InvariantCulture) is var i && i < 100 ? (RedisValue)i : RedisValue.Null), await db.StringGetAsync(many));
        Assert.Equal(many.Count(key => int.Parse(key.ToString()[6..], CultureInfo.InvariantCulture) < 100), await db.KeyExistsAsync(many));
    }
}
