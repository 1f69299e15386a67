using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>The cache commands through the real connection handler, against the in-memory cluster.</summary>
public sealed partial class KeyCommandTests : IAsyncLifetime
{
    private readonly TestServer _server = new();
    private TestConnection _client = null!;

    public Task InitializeAsync()
    {
        _client = _server.Connect();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await _client.DisposeAsync();

    private async Task<string> Run(params string[] arguments) => (await _client.CommandAsync(arguments)).ToString();

    private Command LastCommand => _server.Cluster.Executed[^1].Command;

    [Fact]
    public async Task GetAndSet()
    {
        Assert.Equal("$nil", await Run("GET", "k"));
        Assert.Equal("+OK", await Run("SET", "k", "v"));
        Assert.Equal("$v", await Run("get", "k"));
        Assert.Equal("+OK", await Run("PUT", "k", "w"));
        Assert.Equal("$w", await Run("GeT", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'get' command", await Run("GET"));
        Assert.Equal("-ERR wrong number of arguments for 'get' command", await Run("GET", "a", "b"));
        Assert.Equal("-ERR wrong number of arguments for 'set' command", await Run("SET", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'put' command", await Run("PUT", "k", "v", "EX", "1"));
    }

    [Fact]
    public async Task SetConditionsAndGet()
    {
        Assert.Equal("$nil", await Run("SET", "k", "1", "XX"));
        Assert.Equal("+OK", await Run("SET", "k", "1", "NX"));
        Assert.Equal("$nil", await Run("SET", "k", "2", "NX"));
        Assert.Equal("+OK", await Run("SET", "k", "2", "xx"));
        Assert.Equal("$2", await Run("SET", "k", "3", "GET"));
        Assert.Equal("$3", await Run("SET", "k", "4", "NX", "GET"));
        Assert.Equal(SetCondition.IfAbsent, LastCommand.Set.Condition);
        Assert.True(LastCommand.Set.Get);
        Assert.Equal("$nil", await Run("SET", "new", "x", "GET"));
    }

    [Fact]
    public async Task SetExpiryOptions()
    {
        var now = _server.Cluster.NowMs;
        Assert.Equal("+OK", await Run("SET", "k", "v", "EX", "10"));
        Assert.Equal(10_000, LastCommand.Set.TtlMs);
        Assert.Equal(":10", await Run("TTL", "k"));
        Assert.Equal("+OK", await Run("SET", "k", "v", "px", "1500"));
        Assert.Equal(1500, LastCommand.Set.TtlMs);
        Assert.Equal(":1500", await Run("PTTL", "k"));
        Assert.Equal("+OK", await Run("SET", "k", "v", "EXAT", ((now / 1000) + 100).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(((now / 1000) + 100) * 1000, LastCommand.Set.ExpireAtMs);
        Assert.Equal("+OK", await Run("SET", "k", "v", "PXAT", (now + 5000).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(now + 5000, LastCommand.Set.ExpireAtMs);
        Assert.Equal("+OK", await Run("SET", "k", "w", "KEEPTTL"));
        Assert.True(LastCommand.Set.KeepTtl);
        Assert.Equal(":5000", await Run("PTTL", "k"));
        Assert.Equal("+OK", await Run("SET", "k", "w"));
        Assert.Equal(":-1", await Run("TTL", "k"));

        // Redis lets a repeated EX win with its last value.
        Assert.Equal("+OK", await Run("SET", "k", "v", "EX", "1", "EX", "20"));
        Assert.Equal(20_000, LastCommand.Set.TtlMs);
    }

    [Fact]
    public async Task SetVariantsClientsSend()
    {
        Assert.Equal("+OK", await Run("SETEX", "k", "10", "v"));
        Assert.Equal(10_000, LastCommand.Set.TtlMs);
        Assert.Equal("+OK", await Run("PSETEX", "k", "1500", "v"));
        Assert.Equal(":1500", await Run("PTTL", "k"));
        Assert.Equal("-ERR invalid expire time in 'setex' command", await Run("SETEX", "k", "0", "v"));
        Assert.Equal("-ERR invalid expire time in 'psetex' command", await Run("PSETEX", "k", "-1", "v"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("SETEX", "k", "x", "v"));
        Assert.Equal(":1", await Run("SETNX", "n", "1"));
        Assert.Equal(":0", await Run("SETNX", "n", "2"));
        Assert.Equal("$1", await Run("GETSET", "n", "3"));
        Assert.Equal("$3", await Run("GET", "n"));
        Assert.Equal("$nil", await Run("GETSET", "fresh", "x"));
        Assert.Equal("-ERR wrong number of arguments for 'setex' command", await Run("SETEX", "k", "10"));
    }

    [Theory]
    [InlineData("-ERR syntax error", "NX", "XX")]
    [InlineData("-ERR syntax error", "XX", "NX")]
    [InlineData("-ERR syntax error", "EX", "10", "PX", "10")]
    [InlineData("-ERR syntax error", "EX", "10", "KEEPTTL")]
    [InlineData("-ERR syntax error", "KEEPTTL", "PXAT", "10")]
    [InlineData("-ERR syntax error", "EX")]
    [InlineData("-ERR syntax error", "FOO")]
    [InlineData("-ERR syntax error", "EXAT", "1", "EX", "1")]
    [InlineData("-ERR value is not an integer or out of range", "EX", "ten")]
    [InlineData("-ERR value is not an integer or out of range", "PX", "1.5")]
    [InlineData("-ERR invalid expire time in 'set' command", "EX", "0")]
    [InlineData("-ERR invalid expire time in 'set' command", "PX", "-5")]
    [InlineData("-ERR invalid expire time in 'set' command", "EXAT", "0")]
    [InlineData("-ERR invalid expire time in 'set' command", "EX", "9223372036854775")]
    [InlineData("-ERR invalid expire time in 'set' command", "PX", "9223372036854775807")]
    public async Task SetOptionErrors(string error, params string[] options)
    {
        Assert.Equal(error, await Run(["SET", "k", "v", .. options]));
        Assert.Empty(_server.Cluster.Executed);
    }

    [Fact]
    public async Task DeleteUnlinkAndExists()
    {
        await Run("MSET", "a", "1", "b", "2", "c", "3");
        Assert.Equal(":3", await Run("EXISTS", "a", "b", "a", "zz"));
        Assert.Equal(":2", await Run("DEL", "a", "b", "zz"));
        Assert.Equal(":1", await Run("UNLINK", "c"));
        Assert.Equal(":0", await Run("EXISTS", "a", "c"));
        Assert.Equal("-ERR wrong number of arguments for 'del' command", await Run("DEL"));
        Assert.Equal("-ERR wrong number of arguments for 'unlink' command", await Run("UNLINK"));
        Assert.Equal("-ERR wrong number of arguments for 'exists' command", await Run("EXISTS"));
    }

    [Fact]
    public async Task MultiGetAndMultiSet()
    {
        Assert.Equal("+OK", await Run("MSET", "a", "1", "b", "2"));
        Assert.Equal("*[$1, $nil, $2]", await Run("MGET", "a", "missing", "b"));
        Assert.Equal("-ERR wrong number of arguments for 'mset' command", await Run("MSET", "a", "1", "b"));
        Assert.Equal("-ERR wrong number of arguments for 'mset' command", await Run("MSET", "a"));
        Assert.Equal("-ERR wrong number of arguments for 'mget' command", await Run("MGET"));
    }

    [Fact]
    public async Task IncrementsAndDecrements()
    {
        Assert.Equal(":1", await Run("INCR", "n"));
        Assert.Equal(":11", await Run("INCRBY", "n", "10"));
        Assert.Equal(":10", await Run("DECR", "n"));
        Assert.Equal(":-5", await Run("DECRBY", "n", "15"));
        Assert.Equal(-15, LastCommand.IncrBy.Delta);
        Assert.Equal(":-2", await Run("INCRBY", "n", "3"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("INCRBY", "n", "x"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("DECRBY", "n", "1e3"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("INCRBY", "n", "9223372036854775808"));
        Assert.Equal("-ERR decrement would overflow", await Run("DECRBY", "n", "-9223372036854775808"));
        await Run("SET", "s", "abc");
        Assert.Equal("-ERR value is not an integer or out of range", await Run("INCR", "s"));
        await Run("SET", "big", "9223372036854775807");
        Assert.Equal("-ERR increment or decrement would overflow", await Run("INCR", "big"));
        Assert.Equal("-ERR wrong number of arguments for 'incr' command", await Run("INCR"));
        Assert.Equal("-ERR wrong number of arguments for 'decrby' command", await Run("DECRBY", "n"));
    }

    [Fact]
    public async Task ExpireFamily()
    {
        await Run("SET", "k", "v");
        Assert.Equal(":1", await Run("EXPIRE", "k", "100"));
        Assert.Equal(100_000, LastCommand.Expire.TtlMs);
        Assert.Equal(":100", await Run("TTL", "k"));
        Assert.Equal(":0", await Run("EXPIRE", "k", "50", "NX"));
        Assert.Equal(ExpireCondition.ExpireIfNoTtl, LastCommand.Expire.Condition);
        Assert.Equal(":0", await Run("EXPIRE", "k", "50", "GT"));
        Assert.Equal(":1", await Run("EXPIRE", "k", "50", "LT"));
        Assert.Equal(":1", await Run("PEXPIRE", "k", "200000", "XX", "GT"));
        Assert.Equal(ExpireCondition.ExpireIfGreater, LastCommand.Expire.Condition);
        Assert.Equal(":200000", await Run("PTTL", "k"));
        Assert.Equal(":1", await Run("PEXPIRE", "k", "1000", "xx", "lt"));
        Assert.Equal(ExpireCondition.ExpireIfHasTtlAndLess, LastCommand.Expire.Condition);
        Assert.Equal(":1", await Run("PERSIST", "k"));
        Assert.Equal(":0", await Run("PERSIST", "k"));
        Assert.Equal(":0", await Run("EXPIRE", "k", "10", "XX", "LT"));
        Assert.Equal(":1", await Run("EXPIRE", "k", "10", "LT"));

        var at = (_server.Cluster.NowMs / 1000) + 30;
        Assert.Equal(":1", await Run("EXPIREAT", "k", at.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Equal(at * 1000, LastCommand.Expire.ExpireAtMs);
        Assert.Equal(":1", await Run("PEXPIREAT", "k", (at * 1000).ToString(System.Globalization.CultureInfo.InvariantCulture)));

        // A time in the past deletes the key.
        Assert.Equal(":1", await Run("EXPIRE", "k", "-1"));
        Assert.Equal(":-2", await Run("TTL", "k"));
        Assert.Equal(":0", await Run("EXPIRE", "missing", "10"));
    }

    [Theory]
    [InlineData("-ERR NX and XX, GT or LT options at the same time are not compatible", "10", "NX", "XX")]
    [InlineData("-ERR NX and XX, GT or LT options at the same time are not compatible", "10", "GT", "NX")]
    [InlineData("-ERR GT and LT options at the same time are not compatible", "10", "GT", "LT")]
    [InlineData("-ERR Unsupported option FOO", "10", "FOO")]
    [InlineData("-ERR Unsupported option FOO", "ten", "FOO")]
    [InlineData("-ERR Unsupported option x", "10", "x\r\n")] // Redis trims CR/LF from the end of a formatted error
    [InlineData("-ERR Unsupported option a b", "10", "a\rb")]
    [InlineData("-ERR value is not an integer or out of range", "ten")]
    [InlineData("-ERR value is not an integer or out of range", "ten", "NX")]
    [InlineData("-ERR invalid expire time in 'expire' command", "9223372036854776")]
    [InlineData("-ERR invalid expire time in 'expire' command", "-9223372036854776")]
    [InlineData("-ERR invalid expire time in 'expire' command", "9223372036854775")]
    public async Task ExpireErrors(string error, params string[] arguments)
    {
        Assert.Equal(error, await Run(["EXPIRE", "k", .. arguments]));
        Assert.Empty(_server.Cluster.Executed);
    }

    [Fact]
    public async Task OptionsAreReadAsRedisReadsThemUpToANulByte()
    {
        // Redis compares options with strcasecmp (or character by character up to the terminating NUL), so an option
        // with a NUL byte and more after it is that option, and an error quotes it as far as the NUL, as C's %s does.
        Assert.Equal("+OK", await Run("SET", "k", "v", "ex\0zz", "100"));
        Assert.Equal(100_000, LastCommand.Set.TtlMs);
        Assert.Equal("$v", await Run("SET", "k", "w", "NX\0", "GET\0x", "KEEPTTL\0"));
        Assert.Equal((SetCondition.IfAbsent, true, true), (LastCommand.Set.Condition, LastCommand.Set.Get, LastCommand.Set.KeepTtl));
        Assert.Equal("$v", await Run("GETEX", "k", "persist\0"));
        Assert.True(LastCommand.Getex.Persist);
        Assert.Equal(":1", await Run("EXPIRE", "k", "100", "nx\0zz"));
        Assert.Equal(ExpireCondition.ExpireIfNoTtl, LastCommand.Expire.Condition);
        Assert.Equal("-ERR Unsupported option bo", await Run("EXPIRE", "k", "100", "bo\0gus"));
        Assert.Equal("*[$0, *[$k]]", await Run("SCAN", "0", "count\0", "5", "TYPE", "string\0zz"));
        Assert.Equal(5UL, LastCommand.Scan.Count);
        Assert.Equal("+OK", await Run("FLUSHALL", "sync\0x"));
        Assert.Equal("-ERR syntax error", await Run("SET", "k", "v", "nxx"));
        Assert.Equal("-ERR syntax error", await Run("SET", "k", "v", "\0NX"));
    }

    [Fact]
    public async Task ExpireErrorNamesTheCommand()
    {
        Assert.Equal("-ERR invalid expire time in 'pexpire' command", await Run("PEXPIRE", "k", "9223372036854775807"));
        Assert.Equal("-ERR wrong number of arguments for 'pexpire' command", await Run("PEXPIRE", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'ttl' command", await Run("TTL"));
        Assert.Equal("-ERR wrong number of arguments for 'persist' command", await Run("PERSIST", "a", "b"));
    }

    [Fact]
    public async Task DatabaseSize()
    {
        Assert.Equal(":0", await Run("DBSIZE"));
        await Run("MSET", "a", "1", "b", "2");
        Assert.Equal(":2", await Run("DBSIZE"));
        Assert.Equal("-ERR wrong number of arguments for 'dbsize' command", await Run("DBSIZE", "x"));
    }

    [Fact]
    public async Task ReadsAreLinearizableUntilReadOnly()
    {
        await Run("GET", "k");
        Assert.Equal(ReadMode.Linearizable, _server.Cluster.Executed[^1].Mode);
        Assert.Equal(ReadConsistency.Linearizable, LastCommand.Consistency);
        Assert.Equal("+OK", await Run("READONLY"));
        foreach (var read in new[] { new[] { "GET", "k" }, ["MGET", "k"], ["EXISTS", "k"], ["TTL", "k"], ["PTTL", "k"], ["DBSIZE"] })
        {
            await Run(read);
            Assert.Equal(ReadMode.Local, _server.Cluster.Executed[^1].Mode);
            Assert.Equal(ReadConsistency.Local, LastCommand.Consistency);
        }

        // Writes always go through the leader, linearizably.
        await Run("SET", "k", "v");
        Assert.Equal(ReadMode.Linearizable, _server.Cluster.Executed[^1].Mode);
        Assert.Equal("+OK", await Run("READWRITE"));
        await Run("GET", "k");
        Assert.Equal(ReadMode.Linearizable, _server.Cluster.Executed[^1].Mode);
    }

    [Fact]
    public async Task WritesCarryASessionAndReadsDoNot()
    {
        await Run("SET", "k", "v");
        var first = LastCommand;
        Assert.NotEqual(0UL, first.ClientId);
        Assert.Equal(1UL, first.Sequence);
        await Run("INCR", "n");
        Assert.Equal(first.ClientId, LastCommand.ClientId);
        Assert.Equal(2UL, LastCommand.Sequence);
        await Run("GET", "k");
        Assert.Equal(0UL, LastCommand.ClientId);
    }

    [Fact]
    public async Task BinaryKeysAndValuesRoundTrip()
    {
        var value = string.Concat(Enumerable.Range(0, 256).Select(i => (char)i));
        Assert.Equal("+OK", await Run("SET", "\0\r\n\xff", value));
        var reply = await _client.CommandAsync("GET", "\0\r\n\xff");
        Assert.Equal(value, reply.Text);
    }

    [Fact]
    public async Task UnknownCommandsAreWordedAsRedisWordsThem()
    {
        Assert.Equal("-ERR unknown command 'foo', with args beginning with: 'a' 'b' ", await Run("foo", "a", "b"));
        Assert.Equal("-ERR unknown command 'FOO', with args beginning with: ", await Run("FOO"));
        var longArgument = new string('x', 200);
        Assert.Equal($"-ERR unknown command 'foo', with args beginning with: '{new string('x', 128)}' ", await Run("foo", longArgument, "b"));
        Assert.Equal("-ERR unknown command 'foo', with args beginning with: 'a  b' ", await Run("foo", "a\r\nb"));
    }
}
