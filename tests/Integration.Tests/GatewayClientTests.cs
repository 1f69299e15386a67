using System.Diagnostics;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>Real Redis clients through the gateway in front of a real 3-node cluster.</summary>
public sealed class GatewayClientTests(ITestOutputHelper output)
{
    /// <summary>
    /// A gateway whose secret the nodes refuse: its clients waited out the whole deadline for a TRYAGAIN that said only
    /// "the cluster did not answer in time", and its log warned of every stream retry, twice a second per node.
    /// </summary>
    [Fact]
    public async Task AGatewayWhoseSecretTheNodesRefuseSaysSoToItsClientsAndLogsItOncePerNode()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync(new Dictionary<string, string> { ["Cluster:ClusterSecret"] = "not-the-secret" });
        const string Refused = "TRYAGAIN cluster unavailable, command not applied (safe to retry): not applied: every node refuses this gateway's credentials (wrong or missing cluster secret); Dcache:Gateway:Cluster:ClusterId and ClusterSecret must be the nodes'";

        // The first command may come before any node has refused a call: it is not applied either (a refused stream
        // delivered nothing), so it answers TRYAGAIN too, never UNKNOWN.
        var early = new List<string>();
        await Eventually.WaitAsync(async () =>
        {
            var reply = (await RedisTools.RedisCliAsync(cluster.GatewayPort, "SET k v")).Output.Trim();
            early.Add(reply);
            return reply == Refused;
        }, TimeSpan.FromSeconds(30), "SET to be refused for the credentials");
        Assert.All(early, reply => Assert.StartsWith("TRYAGAIN ", reply, StringComparison.Ordinal));
        var (_, replies) = await RedisTools.RedisCliScriptAsync(cluster.GatewayPort, "SET k v", "GET k", "INCR n");
        Assert.Equal(string.Join("\n\n", Enumerable.Repeat(Refused, 3)), replies.Trim());

        var log = cluster.Gateway!.RecentOutput(2000);
        foreach (var node in cluster.Nodes.Values)
        {
            var line = $"Node {node.GrpcUrl} refuses this gateway's credentials: wrong or missing cluster secret.";
            Assert.True(log.Split(line).Length - 1 == 1, $"expected one '{line}' in the gateway's log:\n{log}");
        }

        Assert.DoesNotContain("Command stream to", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RedisCliRoundTripsEveryDocumentedCommandAndRedisBenchmarkRunsClean()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        // Each line: the arguments, and the exact output of redis-cli (raw mode).
        (string Args, string Expected)[] script =
        [
            ("PING", "PONG"),
            ("PING hello", "hello"),
            ("ECHO hi", "hi"),
            ("SET k1 v1", "OK"),
            ("GET k1", "v1"),
            ("PUT k2 v2", "OK"),
            ("GET k2", "v2"),
            ("SET k1 v9 NX", ""),
            ("SET k3 v3 XX", ""),
            ("SET k1 v10 XX GET", "v1"),
            ("SET k4 v4 EX 100", "OK"),
            ("TTL k4", "100|99"),
            ("SET k5 v5 PX 100000 KEEPTTL", "ERR syntax error"),
            ("SET k4 v44 KEEPTTL", "OK"),
            ("PTTL k4", null!),
            ("EXISTS k1 k2 nope", "2"),
            ("MSET a 1 b 2", "OK"),
            ("MGET a b nope", "1\n2\n"),
            ("INCR a", "2"),
            ("INCRBY a 10", "12"),
            ("DECR a", "11"),
            ("DECRBY a 5", "6"),
            ("INCR k1", "ERR value is not an integer or out of range"),
            ("EXPIRE b 100", "1"),
            ("PEXPIRE b 200000 GT", "1"),
            ("TTL b", "200|199"),
            ("PERSIST b", "1"),
            ("TTL b", "-1"),
            ("TTL nope", "-2"),
            ("DEL a nope", "1"),
            ("UNLINK b", "1"),
            ("DBSIZE", "3"),
            ("SELECT 0", "OK"),
            ("SELECT 1", "ERR DB index is out of range"),
            ("CLIENT SETNAME tester", "OK"),
            ("CLIENT GETNAME", ""), // each redis-cli run is a new connection, without a name
            ("READONLY", "OK"),
            ("READWRITE", "OK"),
            ("RESET", "RESET"),
            ("CONFIG GET databases", "databases\n1"),
            ("CLUSTER NODES", "ERR This instance has cluster support disabled"),
            ("SETEX sx 100 v", "OK"),
            ("TTL sx", "100|99"),
            ("PSETEX px 100000 v", "OK"),
            ("TTL px", "100|99"),
            ("SETNX nx 1", "1"),
            ("SETNX nx 2", "0"),
            ("GETSET nx 3", "1"),
            ("EXPIREAT nx 4102444800", "1"),
            ("PEXPIREAT nx 4102444800000 LT", "0"),
            ("SET s1 Hello", "OK"),
            ("APPEND s1 World", "10"),
            ("STRLEN s1", "10"),
            ("GETRANGE s1 0 4", "Hello"),
            ("SUBSTR s1 -5 -1", "World"),
            ("TYPE s1", "string"),
            ("TYPE nope", "none"),
            ("EXPIRETIME s1", "-1"),
            ("PEXPIRETIME nope", "-2"),
            ("EXPIREAT s1 4102444800", "1"),
            ("EXPIRETIME s1", "4102444800"),
            ("PEXPIRETIME s1", "4102444800000"),
            ("TOUCH s1 nope s1", "2"),
            ("GETEX s1 PERSIST", "HelloWorld"),
            ("TTL s1", "-1"),
            ("GETEX s1 EX 100", "HelloWorld"),
            ("TTL s1", "100|99"),
            ("GETEX s1", "HelloWorld"),
            ("GETEX s1 KEEPTTL", "ERR syntax error"),
            ("GETDEL s1", "HelloWorld"),
            ("GETDEL s1", ""),
            ("SET f 10.50", "OK"),
            ("INCRBYFLOAT f 0.1", "10.6"),
            ("INCRBYFLOAT f -5", "5.6"),
            ("INCRBYFLOAT f abc", "ERR value is not a valid float"),
            ("MSETNX m1 a m2 b", "1"),
            ("MSETNX m2 c m3 d", "0"),
            ("RENAME m1 r1", "OK"),
            ("RENAME m1 r1", "ERR no such key"),
            ("RENAMENX r1 m2", "0"),
            ("RENAMENX r1 r2", "1"),
            ("SETRANGE r2 3 xyz", "6"),
            ("GETRANGE r2 3 5", "xyz"),
            ("STRLEN r2", "6"),
            ("SETRANGE gap 0 \"\"", "0"),
            ("EXISTS gap", "0"),
            ("SETRANGE r2 -1 x", "ERR offset is out of range"),
            ("SETRANGE r2 536870911 xy", "ERR string exceeds maximum allowed size (proto-max-bulk-len)"),
            ("EXPIRE r2 100", "1"),
            ("COPY r2 c2", "1"),
            ("TTL c2", "100|99"),
            ("COPY r2 c2", "0"),
            ("COPY m2 c2 REPLACE DB 0", "1"),
            ("GET c2", "b"),
            ("COPY c2 c2", "ERR source and destination objects are the same"),
            ("COPY c2 c3 DB 1", "ERR DB index is out of range"),
            ("DEL c2", "1"),
            ("RANDOMKEY", null!),
            ("TIME", null!),
            ("KEYS r*", "r2"),
            ("KEYS m?", "m2"),
            ("SCAN 0 MATCH r* COUNT 1000", "0\nr2"),
            ("SCAN 0 TYPE hash", "0"),
            ("FLUSHDB ASYNC", "OK"),
            ("KEYS *", ""),
            ("SET k1 again", "OK"),
            ("FLUSHALL", "OK"),
            ("DBSIZE", "0"),
            ("QUIT", "OK"),
            ("HELLO 2", null!),
            ("AUTH secret", null!),
            ("INFO", null!),
            ("CLIENT ID", null!),
            ("CLIENT SETINFO LIB-NAME test", "OK"),
            ("CLIENT INFO", null!),
            ("CLIENT LIST", null!),
            ("CLIENT HELP", null!),
            ("CONFIG HELP", null!),
            ("CONFIG SET timeout 1", null!),
            ("CONFIG RESETSTAT", "OK"),
            ("COMMAND COUNT", null!),
            ("COMMAND LIST", null!),
            ("COMMAND INFO get", null!),
            ("COMMAND DOCS get", ""),
            ("COMMAND HELP", null!),
            ("NOSUCH x", "ERR unknown command 'NOSUCH', with args beginning with: 'x' "),
            ("GET", "ERR wrong number of arguments for 'get' command"),
        ];

        foreach (var (args, expected) in script)
        {
            var (exit, stdout) = await RedisTools.RedisCliAsync(cluster.GatewayPort, args);
            Assert.True(exit == 0, $"redis-cli {args} exited {exit}");
            Assert.True(args.StartsWith("NOSUCH", StringComparison.Ordinal) || !stdout.Contains("unknown command", StringComparison.Ordinal), $"redis-cli {args}: {stdout}");
            if (expected is not null)
            {
                // "a|b": either; a TTL read a second after its write (a slow redis-cli start) has rounded down.
                Assert.True(expected.Split('|').Any(e => e.TrimEnd('\n') == stdout.TrimEnd('\n')), $"redis-cli {args}: expected '{expected}', got '{stdout}'");
            }
        }

        var (infoExit, info) = await RedisTools.RedisCliAsync(cluster.GatewayPort, "INFO server");
        Assert.Equal(0, infoExit);
        Assert.Contains("redis_version:", info, StringComparison.Ordinal);

        var (benchExit, bench) = await RedisTools.RunAsync("redis-benchmark", $"-p {cluster.GatewayPort} -t set,get -n 1000 -c 10 -d 100 -r 1000 -q");
        output.WriteLine(bench);
        Assert.Equal(0, benchExit);
        Assert.Contains("SET:", bench, StringComparison.Ordinal);
        Assert.Contains("GET:", bench, StringComparison.Ordinal);
        Assert.DoesNotContain("ERR", bench, StringComparison.Ordinal);
        Assert.DoesNotContain("error", bench, StringComparison.OrdinalIgnoreCase);
    }
}
