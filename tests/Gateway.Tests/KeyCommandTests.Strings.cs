using System.Globalization;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Commands;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>The string and key commands beyond DESIGN's first table (the fixture is in KeyCommandTests.cs).</summary>
public sealed partial class KeyCommandTests
{
    private static string Text(long value) => value.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task StrlenGetrangeAndSubstr()
    {
        await Run("SET", "k", "This is a string");
        Assert.Equal(":16", await Run("STRLEN", "k"));
        Assert.Equal(":0", await Run("STRLEN", "missing"));
        Assert.Equal("$This", await Run("GETRANGE", "k", "0", "3"));
        Assert.Equal((0L, 3L), (LastCommand.Getrange.Start, LastCommand.Getrange.End));
        Assert.Equal("$ing", await Run("GETRANGE", "k", "-3", "-1"));
        Assert.Equal("$string", await Run("substr", "k", "10", "100"));
        Assert.Equal("$", await Run("GETRANGE", "missing", "0", "-1"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("GETRANGE", "missing", "a", "1"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("GETRANGE", "k", "0", "1.5"));
        Assert.Equal("-ERR wrong number of arguments for 'getrange' command", await Run("GETRANGE", "k", "0"));
        Assert.Equal("-ERR wrong number of arguments for 'substr' command", await Run("SUBSTR", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'strlen' command", await Run("STRLEN"));
    }

    [Fact]
    public async Task TypeIsAStatusInBothProtocols()
    {
        await Run("SET", "k", "v");
        Assert.Equal("+string", await Run("TYPE", "k"));
        Assert.Equal("+none", await Run("TYPE", "missing"));
        await Run("HELLO", "3");
        Assert.Equal("+string", await Run("TYPE", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'type' command", await Run("TYPE"));
    }

    [Fact]
    public async Task ExpiretimeAndPexpiretime()
    {
        var at = _server.Cluster.NowMs + 10_400;
        await Run("SET", "k", "v", "PXAT", Text(at));
        await Run("SET", "p", "v");
        Assert.Equal(":" + Text(at), await Run("PEXPIRETIME", "k"));
        Assert.Equal(":" + Text((at + 500) / 1000), await Run("EXPIRETIME", "k"));
        Assert.False(LastCommand.Expiretime.Milliseconds);
        Assert.Equal(":-1", await Run("EXPIRETIME", "p"));
        Assert.Equal(":-2", await Run("PEXPIRETIME", "missing"));
    }

    [Fact]
    public async Task TouchCountsTheKeysThatExist()
    {
        await Run("MSET", "a", "1", "b", "2");
        Assert.Equal(":3", await Run("TOUCH", "a", "b", "a", "zz"));
        Assert.Equal("-ERR wrong number of arguments for 'touch' command", await Run("TOUCH"));
    }

    [Fact]
    public async Task KeysMatchesAGlobWithCase()
    {
        await Run("MSET", "user:1", "a", "user:2", "b", "User:3", "c", "other", "d");
        Assert.Equal("*[$user:1, $user:2]", await Run("KEYS", "user:*"));
        Assert.Equal("*[$User:3, $user:1]", await Run("KEYS", "[Uu]ser:[13]"));
        Assert.Equal("*[]", await Run("KEYS", "nothing*"));
        Assert.Equal(4, (await _client.CommandAsync("KEYS", "*")).Items!.Count);
        Assert.Equal("-ERR wrong number of arguments for 'keys' command", await Run("KEYS"));
    }

    [Fact]
    public async Task NewReadsFollowTheConnectionsReadMode()
    {
        await Run("READONLY");
        foreach (var read in new[] { new[] { "STRLEN", "k" }, ["GETRANGE", "k", "0", "1"], ["TYPE", "k"], ["EXPIRETIME", "k"], ["TOUCH", "k"], ["KEYS", "*"], ["GETEX", "k"] })
        {
            await Run(read);
            Assert.Equal(ReadMode.Local, _server.Cluster.Executed[^1].Mode);
            Assert.Equal(0UL, LastCommand.ClientId);
        }
    }

    [Fact]
    public async Task GetdelReturnsAndRemoves()
    {
        await Run("SET", "k", "v");
        Assert.Equal("$v", await Run("GETDEL", "k"));
        Assert.NotEqual(0UL, LastCommand.ClientId);
        Assert.Equal("$nil", await Run("GETDEL", "k"));
        await Run("HELLO", "3");
        Assert.Equal("_", await Run("GETDEL", "k"));
        Assert.Equal("-ERR wrong number of arguments for 'getdel' command", await Run("GETDEL", "a", "b"));
    }

    [Fact]
    public async Task GetexOptions()
    {
        var now = _server.Cluster.NowMs;
        await Run("SET", "k", "v");
        Assert.Equal("$v", await Run("GETEX", "k", "EX", "10"));
        Assert.Equal(10_000, LastCommand.Getex.TtlMs);
        Assert.Equal(":10", await Run("TTL", "k"));
        Assert.Equal("$v", await Run("GETEX", "k", "px", "1500"));
        Assert.Equal(1500, LastCommand.Getex.TtlMs);
        Assert.Equal("$v", await Run("GETEX", "k", "EXAT", Text((now / 1000) + 100)));
        Assert.Equal(((now / 1000) + 100) * 1000, LastCommand.Getex.ExpireAtMs);
        Assert.Equal("$v", await Run("GETEX", "k", "PXAT", Text(now + 5000)));
        Assert.Equal(":5000", await Run("PTTL", "k"));
        Assert.Equal("$v", await Run("GETEX", "k", "PERSIST"));
        Assert.True(LastCommand.Getex.Persist);
        Assert.Equal(":-1", await Run("TTL", "k"));
        Assert.Equal("$nil", await Run("GETEX", "missing", "EX", "10"));

        // Without an option GETEX is a GET: a read, no session.
        Assert.Equal("$v", await Run("GETEX", "k"));
        Assert.Equal(Command.OpOneofCase.Get, LastCommand.OpCase);
        Assert.Equal(0UL, LastCommand.ClientId);
        Assert.Equal("$v", await Run("GETEX", "k", "EX", "1", "EX", "20"));
        Assert.Equal(20_000, LastCommand.Getex.TtlMs);
    }

    [Theory]
    [InlineData("-ERR syntax error", "EX", "10", "PERSIST")]
    [InlineData("-ERR syntax error", "PERSIST", "EX", "10")]
    [InlineData("-ERR syntax error", "EX", "10", "PX", "10")]
    [InlineData("-ERR syntax error", "KEEPTTL")]
    [InlineData("-ERR syntax error", "NX")]
    [InlineData("-ERR syntax error", "GET")]
    [InlineData("-ERR syntax error", "EX")]
    public async Task GetexOptionErrors(string error, params string[] options)
    {
        Assert.Equal(error, await Run(["GETEX", "k", .. options]));
        Assert.Empty(_server.Cluster.Executed);
    }

    [Theory]
    [InlineData("-ERR value is not an integer or out of range", "EX", "ten")]
    [InlineData("-ERR invalid expire time in 'getex' command", "EX", "0")]
    [InlineData("-ERR invalid expire time in 'getex' command", "PXAT", "-1")]
    [InlineData("-ERR invalid expire time in 'getex' command", "EX", "9223372036854775")]
    public async Task GetexTimeErrorsComeOnlyForAKeyThatExistsAsInRedis(string error, params string[] options)
    {
        // Redis checks the time once it has found the key: for a missing key GETEX answers nil. Nothing is written.
        Assert.Equal("$nil", await Run(["GETEX", "k", .. options]));
        Assert.Equal(Command.OpOneofCase.Get, LastCommand.OpCase);
        await Run("SET", "k", "v", "EX", "100");
        Assert.Equal(error, await Run(["GETEX", "k", .. options]));
        Assert.Equal(Command.OpOneofCase.Get, LastCommand.OpCase);
        Assert.Equal(":100", await Run("TTL", "k"));
    }

    [Fact]
    public async Task AppendAndIncrbyfloat()
    {
        Assert.Equal(":5", await Run("APPEND", "k", "Hello"));
        Assert.Equal(":11", await Run("APPEND", "k", " World"));
        Assert.Equal("$Hello World", await Run("GET", "k"));
        await Run("SET", "f", "10.50");
        Assert.Equal("$10.6", await Run("INCRBYFLOAT", "f", "0.1"));
        Assert.Equal("0.1", LastCommand.IncrByFloat.Increment.ToStringUtf8());
        Assert.Equal("$5200", await Run("INCRBYFLOAT", "g", "5.2e3"));
        Assert.Equal("-ERR value is not a valid float", await Run("INCRBYFLOAT", "k", "1"));
        Assert.Equal("-ERR wrong number of arguments for 'incrbyfloat' command", await Run("INCRBYFLOAT", "f"));
        Assert.Equal("-ERR wrong number of arguments for 'append' command", await Run("APPEND", "k"));
    }

    [Fact]
    public async Task MsetnxSetsAllOrNothing()
    {
        Assert.Equal(":1", await Run("MSETNX", "a", "1", "b", "2"));
        Assert.Equal(":0", await Run("MSETNX", "c", "3", "a", "9"));
        Assert.Equal("*[$1, $2, $nil]", await Run("MGET", "a", "b", "c"));
        Assert.Equal("-ERR wrong number of arguments for 'msetnx' command", await Run("MSETNX", "a", "1", "b"));
        Assert.Equal("-ERR wrong number of arguments for 'msetnx' command", await Run("MSETNX", "a"));
    }

    [Fact]
    public async Task FlushallAndFlushdb()
    {
        await Run("MSET", "a", "1", "b", "2");
        Assert.Equal("+OK", await Run("FLUSHALL"));
        Assert.Equal(":0", await Run("DBSIZE"));
        await Run("SET", "a", "1");
        Assert.Equal("+OK", await Run("FLUSHDB", "async"));
        Assert.Equal("+OK", await Run("flushall", "SYNC"));
        Assert.Equal(Command.OpOneofCase.Flushall, LastCommand.OpCase);
        Assert.Equal(":0", await Run("DBSIZE"));
        var executed = _server.Cluster.Executed.Count;
        Assert.Equal("-ERR syntax error", await Run("FLUSHALL", "LAZY"));
        Assert.Equal("-ERR syntax error", await Run("FLUSHDB", "ASYNC", "SYNC"));
        Assert.Equal(executed, _server.Cluster.Executed.Count);
    }

    [Fact]
    public async Task RenameAndRenamenx()
    {
        var at = _server.Cluster.NowMs + 50_000;
        await Run("SET", "a", "1", "PXAT", Text(at));
        Assert.Equal("+OK", await Run("RENAME", "a", "b"));
        Assert.Equal(":" + Text(at), await Run("PEXPIRETIME", "b"));
        Assert.Equal("-ERR no such key", await Run("RENAME", "a", "b"));
        await Run("SET", "c", "3");
        Assert.Equal(":0", await Run("RENAMENX", "b", "c"));
        Assert.Equal(":1", await Run("RENAMENX", "b", "d"));
        Assert.True(LastCommand.Rename.IfAbsent);
        Assert.Equal("*[$nil, $3, $1]", await Run("MGET", "b", "c", "d"));
        Assert.Equal("-ERR no such key", await Run("RENAMENX", "missing", "x"));
        Assert.Equal("-ERR wrong number of arguments for 'rename' command", await Run("RENAME", "a"));
    }

    [Fact]
    public async Task SetrangeChecksItsArgumentsAsRedisDoes()
    {
        Assert.Equal(":0", await Run("SETRANGE", "missing", "0", ""));
        Assert.Equal(Command.OpOneofCase.Strlen, LastCommand.OpCase); // an empty value changes nothing: a read
        Assert.Equal(":11", await Run("SETRANGE", "k", "6", "World"));
        Assert.Equal((6L, "World"), (LastCommand.Setrange.Offset, LastCommand.Setrange.Value.ToStringUtf8()));
        Assert.Equal(":11", await Run("SETRANGE", "k", "100", ""));
        var executed = _server.Cluster.Executed.Count;
        Assert.Equal("-ERR offset is out of range", await Run("SETRANGE", "k", "-1", ""));
        Assert.Equal("-ERR offset is out of range", await Run("SETRANGE", "missing", "-1", "x"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("SETRANGE", "k", "+1", "x"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("SETRANGE", "k", "99999999999999999999", "x"));
        Assert.Equal("-ERR string exceeds maximum allowed size (proto-max-bulk-len)", await Run("SETRANGE", "k", "536870911", "xy"));
        Assert.Equal("-ERR string exceeds maximum allowed size (proto-max-bulk-len)", await Run("SETRANGE", "k", "9223372036854775807", "x"));
        Assert.Equal("-ERR wrong number of arguments for 'setrange' command", await Run("SETRANGE", "k", "1"));
        Assert.Equal(executed, _server.Cluster.Executed.Count);
    }

    [Fact]
    public async Task CopyChecksItsOptionsAsRedisDoesWithOneDatabase()
    {
        await Run("SET", "a", "1");
        Assert.Equal(":1", await Run("COPY", "a", "b"));
        Assert.Equal(("a", "b", false), (LastCommand.Copy.Source.ToStringUtf8(), LastCommand.Copy.Destination.ToStringUtf8(), LastCommand.Copy.Replace));
        Assert.Equal(":0", await Run("COPY", "a", "b"));
        Assert.Equal(":1", await Run("COPY", "a", "b", "replace", "DB", "0"));
        Assert.True(LastCommand.Copy.Replace);
        Assert.Equal(":0", await Run("COPY", "missing", "b", "db", "0", "REPLACE", "REPLACE"));
        var executed = _server.Cluster.Executed.Count;
        Assert.Equal("-ERR source and destination objects are the same", await Run("COPY", "a", "a"));
        Assert.Equal("-ERR source and destination objects are the same", await Run("COPY", "missing", "missing", "DB", "0"));
        Assert.Equal("-ERR DB index is out of range", await Run("COPY", "a", "b", "DB", "1"));
        Assert.Equal("-ERR DB index is out of range", await Run("COPY", "a", "a", "DB", "-1"));
        Assert.Equal("-ERR DB index is out of range", await Run("COPY", "a", "b", "DB", "0", "DB", "16"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("COPY", "a", "b", "DB", "x"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run("COPY", "a", "b", "DB", "00"));
        Assert.Equal("-ERR value is out of range, value must between -2147483648 and 2147483647", await Run("COPY", "a", "b", "DB", "99999999999"));
        Assert.Equal("-ERR syntax error", await Run("COPY", "a", "b", "DB"));
        Assert.Equal("-ERR syntax error", await Run("COPY", "a", "a", "NOW"));
        Assert.Equal("-ERR wrong number of arguments for 'copy' command", await Run("COPY", "a"));
        Assert.Equal(executed, _server.Cluster.Executed.Count);
    }

    [Fact]
    public async Task RandomkeyIsAReadAndTimeIsTheGatewaysClock()
    {
        Assert.Equal("$nil", await Run("RANDOMKEY"));
        await Run("SET", "k", "v");
        Assert.Equal("$k", await Run("RANDOMKEY"));
        Assert.Equal(ReadConsistency.Linearizable, LastCommand.Consistency);
        await Run("READONLY");
        await Run("RANDOMKEY");
        Assert.Equal(ReadConsistency.Local, LastCommand.Consistency);
        Assert.Equal("-ERR wrong number of arguments for 'randomkey' command", await Run("RANDOMKEY", "x"));

        var executed = _server.Cluster.Executed.Count;
        _server.Cluster.NowMs = 1_700_000_123_456;
        Assert.Equal("*[$1700000123, $456000]", await Run("TIME"));
        _server.Cluster.NowMs = 1_700_000_124_007;
        await Run("HELLO", "3");
        Assert.Equal("*[$1700000124, $7000]", await Run("TIME"));
        Assert.Equal("-ERR wrong number of arguments for 'time' command", await Run("TIME", "x"));
        Assert.Equal(executed, _server.Cluster.Executed.Count);
    }

    [Theory]
    [InlineData("SETRANGE", "k", "0", "v")]
    [InlineData("COPY", "k", "c")]
    [InlineData("RANDOMKEY")]
    public async Task NewCommandsOnANodeThatDoesNotKnowThemSayWhy(params string[] request)
    {
        _server.Cluster.Script = command => command.OpCase is Command.OpOneofCase.Setrange or Command.OpOneofCase.Copy or Command.OpOneofCase.Randomkey
            ? new Reply { Failure = new Failure { Kind = FailureKind.InvalidRequest, Message = "command without an operation" } }
            : null;
        Assert.Equal(
            $"-ERR {request[0]} needs every node on a build that has it (a rolling upgrade is in progress): command without an operation",
            await Run(request));
        Assert.Equal("+OK", await Run("SET", "still", "works"));
    }

    [Fact]
    public async Task EveryCacheCommandReachesTheClusterAsTheWriteOrReadItsTableEntrySays()
    {
        // One valid use of each; the cluster client routes and retries by Command.IsWrite, the table by its flags.
        string[][] samples =
        [
            ["GET", "k"], ["SET", "k", "v"], ["PUT", "k", "v"], ["SETEX", "k", "1", "v"], ["PSETEX", "k", "1", "v"],
            ["SETNX", "k", "v"], ["GETSET", "k", "v"], ["DEL", "k"], ["UNLINK", "k"], ["EXISTS", "k"], ["MGET", "k"],
            ["MSET", "k", "v"], ["INCR", "n"], ["INCRBY", "n", "1"], ["DECR", "n"], ["DECRBY", "n", "1"],
            ["EXPIRE", "k", "9"], ["PEXPIRE", "k", "9"], ["EXPIREAT", "k", "9"], ["PEXPIREAT", "k", "9"], ["PERSIST", "k"],
            ["TTL", "k"], ["PTTL", "k"], ["DBSIZE"], ["STRLEN", "k"], ["GETRANGE", "k", "0", "1"], ["SUBSTR", "k", "0", "1"],
            ["TYPE", "k"], ["EXPIRETIME", "k"], ["PEXPIRETIME", "k"], ["TOUCH", "k"], ["KEYS", "*"], ["GETDEL", "k"],
            ["GETEX", "k", "EX", "9"], ["APPEND", "k", "v"], ["INCRBYFLOAT", "f", "1"], ["MSETNX", "m", "v"],
            ["RENAME", "k", "r"], ["RENAMENX", "r", "k"], ["FLUSHALL"], ["FLUSHDB"], ["SCAN", "0"],
            ["SETRANGE", "k", "1", "v"], ["COPY", "k", "c"], ["RANDOMKEY"],
        ];
        var covered = samples.Select(sample => sample[0].ToLowerInvariant()).ToHashSet();
        // INFO and the transaction commands are not cache commands of their own (those: TransactionCommandTests).
        Assert.Empty(CommandTable.All.Where(spec => spec.TouchesCluster && spec.Name is not ("info" or "exec" or "discard" or "watch" or "unwatch") && !covered.Contains(spec.Name)).Select(spec => spec.Name));
        foreach (var sample in samples)
        {
            var executed = _server.Cluster.Executed.Count;
            Assert.False((await _client.CommandAsync(sample)).IsError, string.Join(' ', sample));
            Assert.Equal(executed + 1, _server.Cluster.Executed.Count);
            var writes = (CommandTable.Find(System.Text.Encoding.ASCII.GetBytes(sample[0]))!.Flags & CommandFlags.Write) != 0;
            Assert.True(writes == LastCommand.IsWrite && writes == (LastCommand.ClientId != 0), $"{sample[0]} sent {LastCommand.OpCase}");
        }
    }

    [Theory]
    [InlineData("strlen", 2, "readonly fast", 1, 1, 1)]
    [InlineData("getrange", 4, "readonly", 1, 1, 1)]
    [InlineData("substr", 4, "readonly", 1, 1, 1)]
    [InlineData("type", 2, "readonly fast", 1, 1, 1)]
    [InlineData("expiretime", 2, "readonly fast", 1, 1, 1)]
    [InlineData("pexpiretime", 2, "readonly fast", 1, 1, 1)]
    [InlineData("touch", -2, "readonly fast", 1, -1, 1)]
    [InlineData("keys", 2, "readonly", 0, 0, 0)]
    [InlineData("scan", -2, "readonly", 0, 0, 0)]
    [InlineData("getdel", 2, "write fast", 1, 1, 1)]
    [InlineData("getex", -2, "write fast", 1, 1, 1)]
    [InlineData("append", 3, "write fast", 1, 1, 1)]
    [InlineData("incrbyfloat", 3, "write fast", 1, 1, 1)]
    [InlineData("msetnx", -3, "write", 1, -1, 2)]
    [InlineData("flushall", -1, "write", 0, 0, 0)]
    [InlineData("flushdb", -1, "write", 0, 0, 0)]
    [InlineData("rename", 3, "write", 1, 2, 1)]
    [InlineData("renamenx", 3, "write fast", 1, 2, 1)]
    [InlineData("setrange", 4, "write", 1, 1, 1)]
    [InlineData("copy", -3, "write", 1, 2, 1)]
    [InlineData("randomkey", 1, "readonly", 0, 0, 0)]
    public async Task CommandInfoDescribesThemAsRedis70Does(string name, int arity, string flags, int firstKey, int lastKey, int step)
    {
        var info = (await _client.CommandAsync("COMMAND", "INFO", name)).Items![0].Items!;
        Assert.Equal("$" + name, info[0].ToString());
        Assert.Equal(arity, info[1].Integer);
        Assert.Equal(flags, string.Join(' ', info[2].Items!.Select(flag => flag.Text)));
        Assert.Equal((firstKey, lastKey, step), ((int)info[3].Integer, (int)info[4].Integer, (int)info[5].Integer));
        Assert.NotNull(CommandTable.Find(System.Text.Encoding.ASCII.GetBytes(name)));
    }
}
