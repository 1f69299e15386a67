using System.Text;
using Dcache.Gateway.Commands;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

public sealed class ServerCommandTests
{
    private static async Task<string> Run(TestConnection client, params string[] arguments) => (await client.CommandAsync(arguments)).ToString();

    [Fact]
    public async Task InfoClaimsARedisSevenPrimaryAndCountsKeys()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        await client.CommandAsync("MSET", "a", "1", "b", "2");
        var info = (await client.CommandAsync("INFO")).Text!;
        Assert.Contains("# Server\r\nredis_version:7.0.15\r\n", info, StringComparison.Ordinal);
        Assert.Contains("\r\nredis_mode:standalone\r\n", info, StringComparison.Ordinal);
        Assert.Contains("\r\ndcache_version:", info, StringComparison.Ordinal);
        Assert.Contains("\r\ntcp_port:6379\r\n", info, StringComparison.Ordinal);
        Assert.Contains("# Replication\r\nrole:master\r\n", info, StringComparison.Ordinal);
        Assert.Contains("\r\nconnected_clients:1\r\n", info, StringComparison.Ordinal);
        Assert.Contains("\r\ncluster_enabled:0\r\n", info, StringComparison.Ordinal);
        Assert.Contains("\r\ndcache_leader_address:127.0.0.1:7001\r\n", info, StringComparison.Ordinal);
        Assert.EndsWith("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n", info, StringComparison.Ordinal);
        Assert.DoesNotContain("\n\n", info.Replace("\r\n", "\n", StringComparison.Ordinal).Replace("\n\n#", "#", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public async Task InfoNamesTheReadModeTheConnectionGets()
    {
        async Task<string> ReadMode(TestConnection client) =>
            (await client.CommandAsync("INFO", "dcache")).Text!.Split("\r\n").Single(line => line.StartsWith("dcache_read_mode:", StringComparison.Ordinal));

        await using var client = new TestServer().Connect();
        Assert.Equal("dcache_read_mode:linearizable", await ReadMode(client));
        Assert.Equal("+OK", await Run(client, "READONLY"));
        Assert.Equal("dcache_read_mode:local", await ReadMode(client));

        // A gateway started with LocalReads serves every connection's reads locally, READWRITE or not.
        await using var onLocalReads = new TestServer(localReads: true).Connect();
        Assert.Equal("dcache_read_mode:local", await ReadMode(onLocalReads));
        Assert.Equal("+OK", await Run(onLocalReads, "READWRITE"));
        Assert.Equal("dcache_read_mode:local", await ReadMode(onLocalReads));
    }

    [Fact]
    public async Task InfoSections()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        var replication = (await client.CommandAsync("INFO", "replication")).Text!;
        Assert.StartsWith("# Replication\r\nrole:master\r\n", replication, StringComparison.Ordinal);
        Assert.DoesNotContain("# Server", replication, StringComparison.Ordinal);
        Assert.Empty(server.Cluster.Executed);

        var two = (await client.CommandAsync("info", "SERVER", "clients")).Text!;
        Assert.Contains("# Server", two, StringComparison.Ordinal);
        Assert.Contains("# Clients", two, StringComparison.Ordinal);
        Assert.Equal("# Keyspace\r\n", (await client.CommandAsync("INFO", "keyspace")).Text);
        Assert.Equal("", (await client.CommandAsync("INFO", "nosuchsection")).Text);
        Assert.Contains("# Keyspace", (await client.CommandAsync("INFO", "everything")).Text!, StringComparison.Ordinal);

        await client.CommandAsync("HELLO", "3");
        Assert.Equal('=', (await client.CommandAsync("INFO", "server")).Type);
    }

    [Fact]
    public async Task InfoStatsCountWhatRedisCounts()
    {
        var server = new TestServer(o => o.MaxClients = 1);
        await using var client = server.Connect();

        async Task<long> Stat(string name)
        {
            var stats = (await client.CommandAsync("INFO", "stats")).Text!;
            var line = stats.Split("\r\n").Single(l => l.StartsWith(name + ":", StringComparison.Ordinal));
            return long.Parse(line[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }

        // Redis counts the commands that ran (call()): not an unknown command, not one refused for its arity, not one
        // queued by MULTI until EXEC runs it, and an EXEC that aborts runs nothing but itself. Measured against Redis
        // 7.0.15: this sequence, after an INFO, adds 8 (that INFO, MULTI, EXEC with its two PINGs, MULTI, EXEC, PING).
        var commands = await Stat("total_commands_processed");
        await client.SendAsync("NOPE\r\nGET\r\nMULTI\r\nPING\r\nPING\r\nEXEC\r\nMULTI\r\nNOPE\r\nEXEC\r\nPING\r\n");
        for (var i = 0; i < 10; i++)
        {
            await client.ReadAsync();
        }

        Assert.Equal(commands + 8, await Stat("total_commands_processed"));

        // A connection refused at maxclients counts as rejected, not as received.
        await using (var refused = server.Connect())
        {
            Assert.Equal("-ERR max number of clients reached", (await refused.ReadAsync()).ToString());
        }

        Assert.Equal(1, await Stat("rejected_connections"));
        Assert.Equal(1, await Stat("total_connections_received"));
    }

    [Fact]
    public async Task InfoAnswersWhenTheClusterCannotCountKeys()
    {
        var server = new TestServer();
        server.Cluster.Script = _ => throw new InvalidOperationException("down");
        await using var client = server.Connect();
        var info = (await client.CommandAsync("INFO")).Text!;
        Assert.EndsWith("# Keyspace\r\n", info, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConfigGetReportsTheConfiguredKeepAliveAndIdleTimeout()
    {
        await using var client = new TestServer(o =>
        {
            o.TcpKeepAliveSeconds = 60;
            o.IdleTimeoutSeconds = 30;
        }).Connect();
        Assert.Equal("*[$tcp-keepalive, $60]", await Run(client, "CONFIG", "GET", "tcp-keepalive"));
        Assert.Equal("*[$timeout, $30]", await Run(client, "CONFIG", "GET", "timeout"));
        Assert.Equal("*[$tcp-keepalive, $60, $timeout, $30]", await Run(client, "CONFIG", "GET", "t*"));
    }

    [Fact]
    public async Task ConfigGetAnswersWhatClientsProbe()
    {
        await using var client = new TestServer(o => o.MaxClients = 123).Connect();
        Assert.Equal("*[$databases, $1]", await Run(client, "CONFIG", "GET", "databases"));
        Assert.Equal("*[$slave-read-only, $yes]", await Run(client, "CONFIG", "GET", "slave-read-only"));
        Assert.Equal("*[$replica-read-only, $yes]", await Run(client, "config", "get", "replica-read-only"));
        Assert.Equal("*[$timeout, $0]", await Run(client, "CONFIG", "GET", "timeout"));
        Assert.Equal("*[$tcp-keepalive, $300]", await Run(client, "CONFIG", "GET", "tcp-keepalive"));
        Assert.Equal("*[$save, $]", await Run(client, "CONFIG", "GET", "save"));
        Assert.Equal("*[$appendonly, $no]", await Run(client, "CONFIG", "GET", "appendonly"));
        Assert.Equal("*[$maxclients, $123]", await Run(client, "CONFIG", "GET", "maxclients"));
        Assert.Equal("*[]", await Run(client, "CONFIG", "GET", "no-such-parameter"));
        Assert.Equal("*[$databases, $1, $timeout, $0]", await Run(client, "CONFIG", "GET", "databases", "timeout", "databases"));
        Assert.Equal("*[$maxclients, $123]", await Run(client, "CONFIG", "GET", "max*s"));
        Assert.Equal("*[$maxclients, $123]", await Run(client, "CONFIG", "GET", "max*s\0x")); // a pattern ends at a NUL byte, as in C
        Assert.Equal("*[]", await Run(client, "CONFIG", "GET", "maxclients\0")); // a name does not
        Assert.Equal("*[$replica-read-only, $yes, $slave-read-only, $yes]", await Run(client, "CONFIG", "GET", "*read-only")); // aliases match patterns too
        Assert.Equal("*[$Databases, $1]", await Run(client, "CONFIG", "GET", "Databases", "databases", "data*"));
        Assert.Equal(22, (await client.CommandAsync("CONFIG", "GET", "*")).Items!.Count);
        Assert.Equal("-ERR wrong number of arguments for 'config|get' command", await Run(client, "CONFIG", "GET"));
        Assert.Equal("-ERR Unknown option or number of arguments for CONFIG SET - 'timeout'", await Run(client, "CONFIG", "SET", "timeout", "5"));
        Assert.Equal("-ERR Unknown option or number of arguments for CONFIG SET - 'time'", await Run(client, "CONFIG", "SET", "time\0out", "5"));
        Assert.Equal("-ERR wrong number of arguments for 'config|set' command", await Run(client, "CONFIG", "SET", "timeout", "5", "maxclients"));
        Assert.Equal("+OK", await Run(client, "CONFIG", "RESETSTAT"));
        Assert.Equal("-ERR The server is running without a config file", await Run(client, "CONFIG", "REWRITE"));
        Assert.Equal("-ERR unknown subcommand 'FOO'. Try CONFIG HELP.", await Run(client, "CONFIG", "FOO"));
    }

    [Fact]
    public async Task CommandIntrospection()
    {
        await using var client = new TestServer().Connect();
        var count = (await client.CommandAsync("COMMAND", "COUNT")).Integer;
        Assert.Equal(CommandTable.All.Count, count);
        var all = await client.CommandAsync("COMMAND");
        Assert.Equal(count, all.Items!.Count);
        var get = (await client.CommandAsync("COMMAND", "INFO", "get", "nope")).Items!;
        Assert.Equal("$get", get[0].Items![0].ToString());
        Assert.Equal(":2", get[0].Items![1].ToString());
        Assert.Equal(":1", get[0].Items![3].ToString());
        Assert.True(get[1].IsNull);
        Assert.Equal("*[]", await Run(client, "COMMAND", "DOCS"));
        Assert.Equal("*[]", await Run(client, "COMMAND", "DOCS", "get"));
        Assert.Contains("$mset", (await client.CommandAsync("COMMAND", "LIST")).ToString(), StringComparison.Ordinal);
        Assert.Contains("$client|setname", (await client.CommandAsync("COMMAND", "LIST")).ToString(), StringComparison.Ordinal);
        Assert.Equal("*[$getdel]", await Run(client, "COMMAND", "LIST", "FILTERBY", "PATTERN", "GETD*"));
        Assert.Equal(["$client|setinfo", "$client|setname"], (await client.CommandAsync("command", "list", "filterby", "pattern", "client|set*")).Items!.Select(item => item.ToString()).Order(StringComparer.Ordinal));
        Assert.Equal("*[]", await Run(client, "COMMAND", "LIST", "FILTERBY", "MODULE", "json"));
        Assert.Equal("*[]", await Run(client, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "string"));
        Assert.Equal("-ERR syntax error", await Run(client, "COMMAND", "LIST", "FILTERBY", "COLOR", "red"));
        Assert.Equal("-ERR syntax error", await Run(client, "COMMAND", "LIST", "FILTERBY", "PATTERN"));
        Assert.Equal("-ERR syntax error", await Run(client, "COMMAND", "LIST", "bogus"));
        Assert.Equal("$client|setname", (await client.CommandAsync("COMMAND", "INFO", "CLIENT|SETNAME")).Items![0].Items![0].ToString());
        Assert.Equal("*[$nil, $nil]", await Run(client, "COMMAND", "INFO", "get|x", "client|nope"));
        Assert.Equal("-ERR unknown subcommand 'BOGUS'. Try COMMAND HELP.", await Run(client, "COMMAND", "BOGUS"));
        await client.CommandAsync("HELLO", "3");
        Assert.Equal("%{}", await Run(client, "COMMAND", "DOCS"));
    }

    [Fact]
    public async Task CommandDescriptionsHaveRedisSevensTypes()
    {
        await using var client = new TestServer().Connect();
        // Flags and ACL categories are sets of simple strings; tips and key specs sets: arrays in RESP2, "~" in RESP3.
        Assert.Equal("*[$get, :2, *[+readonly, +fast], :1, :1, :1, *[], *[], *[], *[]]", (await client.CommandAsync("COMMAND", "INFO", "get")).Items![0].ToString());
        await client.CommandAsync("HELLO", "3");
        Assert.Equal("*[$get, :2, ~[+readonly, +fast], :1, :1, :1, ~[], ~[], ~[], *[]]", (await client.CommandAsync("COMMAND", "INFO", "get")).Items![0].ToString());
        var container = (await client.CommandAsync("COMMAND", "INFO", "client")).Items![0];
        Assert.Equal("*[$client|id, :2, ~[+fast], :0, :0, :0, ~[], ~[], ~[], *[]]", container.Items![9].Items![0].ToString());
    }

    [Fact]
    public async Task ClusterCommandsAnswerAsANonClusterRedis()
    {
        await using var client = new TestServer().Connect();
        Assert.Equal("-ERR This instance has cluster support disabled", await Run(client, "CLUSTER", "NODES"));
        Assert.Equal("-ERR This instance has cluster support disabled", await Run(client, "cluster", "info"));
        Assert.Equal("-ERR wrong number of arguments for 'cluster' command", await Run(client, "CLUSTER"));
        Assert.Equal("-ERR This instance has cluster support disabled", await Run(client, "CLUSTER", "HELP"));

        // Redis knows the subcommands all the same: an unknown one or a wrong arity is refused before the command runs.
        Assert.Equal("-ERR unknown subcommand 'bogus'. Try CLUSTER HELP.", await Run(client, "CLUSTER", "bogus"));
        Assert.Equal("-ERR wrong number of arguments for 'cluster|info' command", await Run(client, "CLUSTER", "INFO", "x"));
        Assert.Equal("-ERR wrong number of arguments for 'cluster|keyslot' command", await Run(client, "CLUSTER", "KEYSLOT"));
        await client.CommandAsync("SUBSCRIBE", "ch");
        Assert.Equal("-ERR unknown subcommand 'bogus'. Try CLUSTER HELP.", await Run(client, "CLUSTER", "bogus"));
    }

    [Theory]
    [InlineData("*", "anything", true)]
    [InlineData("max*", "maxclients", true)]
    [InlineData("MAX*", "maxclients", true)]
    [InlineData("m?xclients", "maxclients", true)]
    [InlineData("[lm]axclients", "maxclients", true)]
    [InlineData("[^m]axclients", "maxclients", false)]
    [InlineData("[a-n]axclients", "maxclients", true)]
    [InlineData("\\*", "*", true)]
    [InlineData("*x", "maxclients", false)]
    [InlineData("[abc", "a", true)]
    [InlineData("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false)]
    public void GlobPatternsMatchAsRedisDoes(string pattern, string text, bool matches) =>
        Assert.Equal(matches, Dcache.Protocol.GlobPattern.Matches(Encoding.Latin1.GetBytes(pattern), Encoding.Latin1.GetBytes(text), ignoreCase: true));

    [Fact]
    public void APatternNestedPastRedissBoundMatchesNothingInsteadOfOverflowingTheStack()
    {
        // A stack overflow ends a .NET process: one KEYS or SCAN MATCH would take the node down.
        var text = new string('a', 200_000);
        var deep = string.Concat(Enumerable.Repeat("*a", 100_000)) + "*";
        Assert.False(Dcache.Protocol.GlobPattern.Matches(Encoding.Latin1.GetBytes(deep), Encoding.Latin1.GetBytes(text), ignoreCase: false));

        var withinBound = string.Concat(Enumerable.Repeat("*a", Dcache.Protocol.GlobPattern.MaxNesting - 1)) + "*";
        Assert.True(Dcache.Protocol.GlobPattern.Matches(Encoding.Latin1.GetBytes(withinBound), Encoding.Latin1.GetBytes(text), ignoreCase: false));
    }

    /// <summary>
    /// CONFIG RESETSTAT answered +OK and reset nothing. Redis 7.0's resetstat zeroes total_connections_received, total_commands_processed and
    /// rejected_connections (among others); the next INFO counts only itself (measured: total_commands_processed:1).
    /// </summary>
    [Fact]
    public async Task ConfigResetStatResetsTheCountersInfoReports()
    {
        var server = new TestServer();
        await using var client = server.Connect();

        async Task<long> Stat(string name)
        {
            var stats = (await client.CommandAsync("INFO", "stats")).Text!;
            var line = stats.Split("\r\n").Single(l => l.StartsWith(name + ":", StringComparison.Ordinal));
            return long.Parse(line[(name.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        }

        for (var i = 0; i < 5; i++)
        {
            await client.CommandAsync("PING");
        }

        var before = await Stat("total_commands_processed");
        Assert.True(before >= 2, $"total_commands_processed before the reset: {before}");
        Assert.Equal("+OK", (await client.CommandAsync("CONFIG", "RESETSTAT")).ToString());
        Assert.Equal(1, await Stat("total_commands_processed"));
        Assert.Equal(0, await Stat("total_connections_received"));
    }
}
