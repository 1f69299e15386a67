using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

public sealed class SmokeTests
{
    [Fact]
    public async Task SetThenGetRoundTrips()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        Assert.Equal("+OK", (await client.CommandAsync("SET", "k", "v")).ToString());
        Assert.Equal("$v", (await client.CommandAsync("GET", "k")).ToString());
        Assert.Equal("+PONG", (await client.CommandAsync("PING")).ToString());
    }
}
