using Dcache.Gateway.Commands;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

/// <summary>Handshake and connection-state commands, as StackExchange.Redis and redis-cli send them.</summary>
public sealed class ConnectionCommandTests
{
    private static async Task<string> Run(TestConnection client, params string[] arguments) => (await client.CommandAsync(arguments)).ToString();

    [Fact]
    public async Task PingAndEcho()
    {
        await using var client = new TestServer().Connect();
        Assert.Equal("+PONG", await Run(client, "PING"));
        Assert.Equal("$hello", await Run(client, "ping", "hello"));
        Assert.Equal("-ERR wrong number of arguments for 'ping' command", await Run(client, "PING", "a", "b"));
        Assert.Equal("$hi there", await Run(client, "ECHO", "hi there"));
        Assert.Equal("-ERR wrong number of arguments for 'echo' command", await Run(client, "ECHO"));
    }

    [Fact]
    public async Task InlineCommandsWork()
    {
        await using var client = new TestServer().Connect();
        await client.SendAsync("PING\r\nSET k \"a b\"\r\nGET k\nEXISTS k\r\n");
        Assert.Equal("+PONG", (await client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.Equal("$a b", (await client.ReadAsync()).ToString());
        Assert.Equal(":1", (await client.ReadAsync()).ToString());
    }

    [Fact]
    public async Task QuitRepliesOkAndClosesIgnoringWhatFollows()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        await client.SendAsync(TestConnection.Encode("SET", "a", "1").Concat(TestConnection.Encode("QUIT")).Concat(TestConnection.Encode("SET", "b", "2")).ToArray());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.True(await client.IsClosedAsync());
        Assert.Equal(1, server.Cluster.KeyCount);
        Assert.Equal(0, server.Clients.ConnectedClients);
    }

    [Fact]
    public async Task SelectOnlyAcceptsDatabaseZero()
    {
        await using var client = new TestServer().Connect();
        Assert.Equal("+OK", await Run(client, "SELECT", "0"));
        Assert.Equal("-ERR DB index is out of range", await Run(client, "SELECT", "1"));
        Assert.Equal("-ERR DB index is out of range", await Run(client, "SELECT", "-1"));
        Assert.Equal("-ERR value is not an integer or out of range", await Run(client, "SELECT", "x"));
        Assert.Equal("-ERR value is out of range, value must between -2147483648 and 2147483647", await Run(client, "SELECT", "9999999999"));
        Assert.Equal("-ERR value is out of range, value must between -2147483648 and 2147483647", await Run(client, "SELECT", "-2147483649"));
        Assert.Equal("-ERR DB index is out of range", await Run(client, "SELECT", "2147483647"));
        Assert.Equal("-ERR wrong number of arguments for 'select' command", await Run(client, "SELECT"));
    }

    [Fact]
    public async Task HelloThreeSwitchesToResp3()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        Assert.Equal("$nil", await Run(client, "GET", "missing"));
        var hello = await client.CommandAsync("HELLO", "3", "SETNAME", "app");
        Assert.Equal('%', hello.Type);
        Assert.Equal("%{$server: $redis, $version: $7.0.15, $proto: :3, $id: :1, $mode: $standalone, $role: $master, $modules: *[]}", hello.ToString());
        Assert.Equal("_", await Run(client, "GET", "missing"));
        Assert.Equal("*[$nil]".Replace("$nil", "_", StringComparison.Ordinal), await Run(client, "MGET", "missing"));
        Assert.Equal("$app", await Run(client, "CLIENT", "GETNAME"));
        Assert.Equal('=', (await client.CommandAsync("CLIENT", "INFO")).Type);
        Assert.Equal('%', (await client.CommandAsync("CONFIG", "GET", "databases")).Type);

        var back = await client.CommandAsync("HELLO", "2");
        Assert.Equal('*', back.Type);
        Assert.Equal(14, back.Items!.Count);
        Assert.Equal("$nil", await Run(client, "GET", "missing"));
    }

    [Fact]
    public async Task HelloWithoutVersionKeepsTheProtocol()
    {
        await using var client = new TestServer().Connect();
        var hello = await client.CommandAsync("HELLO");
        Assert.Equal('*', hello.Type);
        Assert.Equal(":2", hello.Items![5].ToString());
    }

    [Theory]
    [InlineData("-NOPROTO unsupported protocol version", "4")]
    [InlineData("-NOPROTO unsupported protocol version", "1")]
    [InlineData("-ERR Protocol version is not an integer or out of range", "three")]
    [InlineData("-ERR Syntax error in HELLO option 'foo'", "3", "foo")]
    [InlineData("-ERR Syntax error in HELLO option 'AUTH'", "3", "AUTH", "default")]
    [InlineData("-ERR Syntax error in HELLO option 'bo'", "3", "bo\0gus")] // quoted as C's %s prints it
    [InlineData("-ERR Client names cannot contain spaces, newlines or special characters.", "3", "SETNAME", "a b")]
    public async Task HelloErrors(string error, params string[] arguments)
    {
        await using var client = new TestServer().Connect();
        Assert.Equal(error, await Run(client, ["HELLO", .. arguments]));
        Assert.Equal("$nil", await Run(client, "GET", "k"));
    }

    [Fact]
    public async Task WithoutAPasswordAuthBehavesAsRedisNopass()
    {
        await using var client = new TestServer().Connect();
        Assert.Equal("-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?", await Run(client, "AUTH", "x"));
        Assert.Equal("+OK", await Run(client, "AUTH", "default", "anything"));
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "AUTH", "alice", "x"));
        Assert.Equal("-ERR syntax error", await Run(client, "AUTH", "a", "b", "c"));
    }

    [Fact]
    public async Task PasswordIsRequiredBeforeOtherCommands()
    {
        var server = new TestServer(o => o.RequirePass = "s3cret");
        await using var client = server.Connect();
        Assert.Equal("-NOAUTH Authentication required.", await Run(client, "GET", "k"));
        Assert.Equal("-NOAUTH Authentication required.", await Run(client, "PING"));
        Assert.Equal("-ERR unknown command 'nope', with args beginning with: ", await Run(client, "nope"));
        Assert.Equal("-ERR wrong number of arguments for 'get' command", await Run(client, "GET"));
        Assert.Equal("-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time", await Run(client, "HELLO", "3"));
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "AUTH", "wrong"));
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "AUTH", "admin", "s3cret"));
        Assert.Empty(server.Cluster.Executed);
        Assert.Equal("+OK", await Run(client, "AUTH", "s3cret"));
        Assert.Equal("$nil", await Run(client, "GET", "k"));

        // A failed AUTH later does not take authentication away (as in Redis).
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "AUTH", "wrong"));
        Assert.Equal("+PONG", await Run(client, "PING"));
    }

    [Fact]
    public async Task ResetLeavesTheConnectionAsANewOneFindsIt()
    {
        var server = new TestServer(o => o.RequirePass = "pw");
        await using var client = server.Connect();
        Assert.Equal("+RESET", await Run(client, "RESET")); // allowed before AUTH, as in Redis
        await client.CommandAsync("HELLO", "3", "AUTH", "default", "pw", "SETNAME", "n");
        Assert.Equal("+OK", await Run(client, "READONLY"));
        Assert.Equal("+OK", await Run(client, "WATCH", "w"));
        Assert.Equal("+OK", await Run(client, "MULTI"));
        Assert.Equal("+QUEUED", await Run(client, "SET", "k", "v"));

        // Inside MULTI it runs at once, and ends the transaction: nothing queued is sent.
        Assert.Equal("+RESET", await Run(client, "RESET"));
        Assert.Equal("-NOAUTH Authentication required.", await Run(client, "GET", "k"));
        Assert.Equal("+OK", await Run(client, "AUTH", "pw"));
        Assert.Equal("$nil", await Run(client, "GET", "k")); // RESP2 again ("_" in RESP3), and the SET never applied
        Assert.Equal("$nil", await Run(client, "CLIENT", "GETNAME"));
        Assert.Equal("-ERR EXEC without MULTI", await Run(client, "EXEC"));
        Assert.DoesNotContain(server.Cluster.Executed, executed => executed.Command.OpCase is Protocol.Cache.Command.OpOneofCase.Set or Protocol.Cache.Command.OpOneofCase.Transaction);
        Assert.Equal(Cluster.ReadMode.Linearizable, server.Cluster.Executed[^1].Mode); // READWRITE again

        // A subscribed RESP2 connection may RESET, and is then an ordinary one.
        Assert.StartsWith("*", (await client.CommandAsync("SUBSCRIBE", "c")).ToString(), StringComparison.Ordinal);
        Assert.StartsWith("*", await Run(client, "PING"), StringComparison.Ordinal); // a subscriber's PING
        Assert.Equal("+RESET", await Run(client, "RESET"));
        Assert.Equal("+OK", await Run(client, "AUTH", "pw"));
        Assert.Equal("+PONG", await Run(client, "PING"));
    }

    [Fact]
    public async Task HelloCanAuthenticate()
    {
        var server = new TestServer(o => o.RequirePass = "pw");
        await using var client = server.Connect();
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "HELLO", "3", "AUTH", "default", "bad"));

        // As in Redis 7.0, each option takes effect as it is read: what came before a bad password or name is done.
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "HELLO", "3", "AUTH", "default", "bad", "SETNAME", "a b"));
        Assert.Equal("-ERR Client names cannot contain spaces, newlines or special characters.", await Run(client, "HELLO", "3", "SETNAME", "a b"));
        Assert.StartsWith("-NOAUTH HELLO must be called", await Run(client, "HELLO", "3", "SETNAME", "early"), StringComparison.Ordinal);
        Assert.Equal("-WRONGPASS invalid username-password pair or user is disabled.", await Run(client, "HELLO", "3", "SETNAME", "earlier", "AUTH", "default", "bad"));
        Assert.Equal("-ERR Client names cannot contain spaces, newlines or special characters.", await Run(client, "HELLO", "3", "AUTH", "default", "pw", "SETNAME", "a b"));
        Assert.Equal("$nil", await Run(client, "GET", "k")); // authenticated all the same, still in RESP2
        Assert.Equal("$earlier", await Run(client, "CLIENT", "GETNAME"));

        var hello = await client.CommandAsync("HELLO", "3", "AUTH", "default", "pw", "SETNAME", "n");
        Assert.Equal('%', hello.Type);
        Assert.Equal("_", await Run(client, "GET", "k"));
    }

    [Fact]
    public async Task PipelinedAuthLiftsTheLimitsForTheRequestsAfterIt()
    {
        var server = new TestServer(o => o.RequirePass = "pw");
        await using var client = server.Connect();
        var value = new string('v', 20_000);
        await client.SendAsync(TestConnection.Encode("AUTH", "pw").Concat(TestConnection.Encode("SET", "k", value)).Concat(TestConnection.Encode("STRLEN-NOT-HERE")).ToArray());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await client.ReadAsync()).ToString());
        Assert.StartsWith("-ERR unknown command", (await client.ReadAsync()).ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task PipelinedResetBringsBackTheUnauthenticatedLimitsForTheRequestsAfterIt()
    {
        // Redis parses each request after the one before it ran: after RESET, the next is read as an unauthenticated one.
        var server = new TestServer(o => o.RequirePass = "pw");
        await using var client = server.Connect();
        Assert.Equal("+OK", await Run(client, "AUTH", "pw"));
        await client.SendAsync(TestConnection.Encode("RESET").Concat(TestConnection.Encode("SET", "k", new string('v', 20_000))).ToArray());
        Assert.Equal("+RESET", (await client.ReadAsync()).ToString());
        Assert.Equal("-ERR Protocol error: unauthenticated bulk length", (await client.ReadAsync()).ToString());
        Assert.True(await client.IsClosedAsync());
    }

    [Fact]
    public async Task UnauthenticatedLargeRequestIsAProtocolError()
    {
        var server = new TestServer(o => o.RequirePass = "pw");
        await using var client = server.Connect();
        await client.SendCommandAsync("SET", "k", new string('v', 20_000));
        Assert.Equal("-ERR Protocol error: unauthenticated bulk length", (await client.ReadAsync()).ToString());
        Assert.True(await client.IsClosedAsync());
    }

    [Fact]
    public async Task ClientSubcommands()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        var id = (await client.CommandAsync("CLIENT", "ID")).Integer;
        Assert.True(id > 0);
        Assert.Equal("$nil", await Run(client, "CLIENT", "GETNAME"));
        Assert.Equal("+OK", await Run(client, "CLIENT", "SETNAME", "worker-1"));
        Assert.Equal("$worker-1", await Run(client, "client", "getname"));
        Assert.Equal("+OK", await Run(client, "CLIENT", "SETNAME", ""));
        Assert.Equal("$nil", await Run(client, "CLIENT", "GETNAME"));
        Assert.Equal("-ERR Client names cannot contain spaces, newlines or special characters.", await Run(client, "CLIENT", "SETNAME", "a b"));
        Assert.Equal("+OK", await Run(client, "CLIENT", "SETINFO", "lib-name", "SE.Redis"));
        Assert.Equal("+OK", await Run(client, "CLIENT", "SETINFO", "LIB-VER", "2.8.0"));
        Assert.Equal("-ERR Unrecognized option 'color'", await Run(client, "CLIENT", "SETINFO", "color", "blue"));
        Assert.Equal("-ERR lib-name cannot contain spaces, newlines or special characters.", await Run(client, "CLIENT", "SETINFO", "lib-name", "a b"));

        var info = (await client.CommandAsync("CLIENT", "INFO")).Text!;
        Assert.StartsWith($"id={id} addr=127.0.0.1:50000 laddr=127.0.0.1:6379 ", info, StringComparison.Ordinal);
        Assert.Contains(" cmd=client|info ", info, StringComparison.Ordinal);
        Assert.Contains(" lib-name=SE.Redis lib-ver=2.8.0", info, StringComparison.Ordinal);
        Assert.EndsWith("\n", info, StringComparison.Ordinal);

        await using var other = server.Connect();
        await other.CommandAsync("PING");
        var list = (await client.CommandAsync("CLIENT", "LIST")).Text!;
        Assert.Equal(2, list.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Single((await client.CommandAsync("CLIENT", "LIST", "ID", id.ToString(System.Globalization.CultureInfo.InvariantCulture))).Text!.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        Assert.Equal("-ERR unknown subcommand 'nope'. Try CLIENT HELP.", await Run(client, "CLIENT", "nope"));
        Assert.Equal("-ERR wrong number of arguments for 'client' command", await Run(client, "CLIENT"));
        Assert.Equal("-ERR wrong number of arguments for 'client|setname' command", await Run(client, "CLIENT", "SETNAME"));
        Assert.Equal('*', (await client.CommandAsync("CLIENT", "HELP")).Type);
    }

    [Fact]
    public async Task ClientListShowsEveryRequestAndTheFlagsAsRedisSevenDoes()
    {
        var server = new TestServer();
        await using var watched = server.Connect();
        await using var observer = server.Connect();
        Assert.Equal("+OK", await Run(watched, "CLIENT", "SETNAME", "watched"));

        async Task<string> Fields()
        {
            var line = (await observer.CommandAsync("CLIENT", "LIST")).Text!.Split('\n').Single(l => l.Contains(" name=watched ", StringComparison.Ordinal));
            string Field(string name) => line.Split(' ').Single(f => f.StartsWith(name + "=", StringComparison.Ordinal));
            return $"{Field("idle")} {Field("flags")} {Field("multi")} {Field("cmd")}";
        }

        // Redis records the command a request names as it looks it up, before any check: queued by MULTI, refused for its
        // arity or subscriber context, or unknown ("NULL", a subcommand too). Each request also resets idle.
        Assert.Equal("+OK", await Run(watched, "MULTI"));
        server.Cluster.NowMs += 5_000;
        Assert.Equal("+QUEUED", await Run(watched, "SET", "k", "v"));
        Assert.Equal("idle=0 flags=x multi=1 cmd=set", await Fields());
        Assert.Equal("+QUEUED", await Run(watched, "GET", "k"));
        Assert.Equal("idle=0 flags=x multi=2 cmd=get", await Fields());
        Assert.StartsWith("-ERR unknown command", await Run(watched, "NOPE"), StringComparison.Ordinal);
        Assert.Equal("idle=0 flags=x multi=2 cmd=NULL", await Fields());
        Assert.Equal("+OK", await Run(watched, "DISCARD"));
        Assert.StartsWith("-ERR unknown subcommand", await Run(watched, "CLIENT", "NOPE"), StringComparison.Ordinal);
        Assert.Equal("idle=0 flags=N multi=-1 cmd=NULL", await Fields());
        Assert.StartsWith("-ERR wrong number of arguments", await Run(watched, "GET"), StringComparison.Ordinal);
        Assert.Equal("idle=0 flags=N multi=-1 cmd=get", await Fields());
        server.Cluster.NowMs += 3_000;
        Assert.Equal("idle=3 flags=N multi=-1 cmd=get", await Fields());

        // Flags in Redis's order: P before r.
        Assert.Equal("+OK", await Run(watched, "READONLY"));
        await watched.SendCommandAsync("SUBSCRIBE", "channel");
        await watched.ReadAsync();
        Assert.StartsWith("-ERR Can't execute 'get'", await Run(watched, "GET", "k"), StringComparison.Ordinal);
        Assert.Equal("idle=0 flags=Pr multi=-1 cmd=get", await Fields());
        Assert.Equal("+RESET", await Run(watched, "RESET"));
        Assert.Equal("+OK", await Run(watched, "CLIENT", "SETNAME", "watched"));

        // While EXEC runs its commands the connection is still in the transaction.
        Assert.Equal("+OK", await Run(watched, "MULTI"));
        Assert.Equal("+QUEUED", await Run(watched, "CLIENT", "INFO"));
        var inExec = (await watched.CommandAsync("EXEC")).Items!.Single().Text!;
        Assert.Contains(" flags=x db=0 sub=0 psub=0 ssub=0 multi=1 ", inExec, StringComparison.Ordinal);
        Assert.Contains(" cmd=exec ", inExec, StringComparison.Ordinal);
        Assert.Equal("idle=0 flags=N multi=-1 cmd=exec", await Fields());
    }

    [Fact]
    public async Task ClientListTakesItsOptionsAsRedisSevenDoes()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        var id = (await client.CommandAsync("CLIENT", "ID")).Integer.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await using var other = server.Connect();
        await other.CommandAsync("PING");

        // Any 64-bit id is valid (one that names no client adds nothing); ids are listed in the order given, repeats too.
        Assert.Equal("$", await Run(client, "CLIENT", "LIST", "ID", "0", "-5"));
        Assert.Equal(2, (await client.CommandAsync("CLIENT", "LIST", "ID", id, "99", id)).Text!.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal("-ERR Invalid client ID", await Run(client, "CLIENT", "LIST", "ID", id, "x"));

        // TYPE only as the one option; type names read up to a NUL byte, as strcasecmp reads them.
        Assert.Equal(2, (await client.CommandAsync("CLIENT", "LIST", "type\0", "Normal\0x")).Text!.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal("$", await Run(client, "CLIENT", "LIST", "TYPE", "pubsub"));
        Assert.Equal("-ERR syntax error", await Run(client, "CLIENT", "LIST", "TYPE", "normal", "ID", id));
        Assert.Equal("-ERR syntax error", await Run(client, "CLIENT", "LIST", "TYPE", "normal", "TYPE", "pubsub"));
        Assert.Equal("-ERR syntax error", await Run(client, "CLIENT", "LIST", "ID"));
        Assert.Equal("-ERR Unknown client type 'bo'", await Run(client, "CLIENT", "LIST", "TYPE", "bo\0gus"));
    }

    [Fact]
    public async Task HelpLinesAreSimpleStringsAsInRedis()
    {
        await using var client = new TestServer().Connect();
        foreach (var container in (string[])["CLIENT", "CONFIG", "COMMAND"])
        {
            var help = await client.CommandAsync(container, "HELP");
            Assert.Equal($"{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:", help.Items![0].Text);
            Assert.All(help.Items, line => Assert.Equal('+', line.Type));
        }
    }

    [Fact]
    public async Task SubscribeIsAcknowledgedAndRestrictsRespTwoConnections()
    {
        await using var client = new TestServer().Connect();
        await client.SendCommandAsync("SUBSCRIBE", "__Booksleeve_MasterChanged", "other");
        Assert.Equal("*[$subscribe, $__Booksleeve_MasterChanged, :1]", (await client.ReadAsync()).ToString());
        Assert.Equal("*[$subscribe, $other, :2]", (await client.ReadAsync()).ToString());
        Assert.Equal("*[$pong, $]", await Run(client, "PING"));
        Assert.Equal("*[$pong, $x]", await Run(client, "PING", "x"));
        Assert.Equal("-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context", await Run(client, "GET", "k"));
        Assert.Equal("*[$psubscribe, $p*, :3]", await Run(client, "PSUBSCRIBE", "p*"));
        Assert.Equal("*[$unsubscribe, $other, :2]", await Run(client, "UNSUBSCRIBE", "other"));
        await client.SendCommandAsync("UNSUBSCRIBE");
        Assert.Equal("*[$unsubscribe, $__Booksleeve_MasterChanged, :1]", (await client.ReadAsync()).ToString());
        Assert.Equal("*[$punsubscribe, $p*, :0]", await Run(client, "PUNSUBSCRIBE"));
        Assert.Equal("*[$unsubscribe, $nil, :0]", await Run(client, "UNSUBSCRIBE"));
        Assert.Equal("+PONG", await Run(client, "PING"));
        Assert.Equal("$nil", await Run(client, "GET", "k"));
    }

    [Fact]
    public async Task Subscriptions_are_bounded_by_max_request_bytes_and_a_refused_subscribe_adds_none()
    {
        // Each name costs two bytes a character and the overhead of keeping it: room for three names of 30, not four.
        const int nameCost = (2 * 30) + ClientState.SubscriptionOverheadBytes;
        const int limit = (3 * nameCost) + 10;
        await using var client = new TestServer(options => options.MaxRequestBytes = limit).Connect();
        string Name(char c) => new(c, 30);

        await client.SendCommandAsync("SUBSCRIBE", Name('a'), Name('b'));
        Assert.Equal($"*[$subscribe, ${Name('a')}, :1]", (await client.ReadAsync()).ToString());
        Assert.Equal($"*[$subscribe, ${Name('b')}, :2]", (await client.ReadAsync()).ToString());
        Assert.Equal($"*[$psubscribe, ${Name('c')}, :3]", await Run(client, "PSUBSCRIBE", Name('c')));
        Assert.Equal($"*[$subscribe, ${Name('a')}, :3]", await Run(client, "SUBSCRIBE", Name('a'))); // counted once

        // Channels and patterns share the room; a refused command subscribes to none of its names.
        var refusal = "-" + ConnectionCommands.SubscriptionsTooLarge(limit);
        Assert.Equal(refusal, await Run(client, "SUBSCRIBE", Name('d')));
        Assert.Equal(refusal, await Run(client, "PSUBSCRIBE", Name('a')));
        Assert.Equal(refusal, await Run(client, "SUBSCRIBE", Name('a'), Name('d')));
        Assert.Equal($"*[$unsubscribe, ${Name('d')}, :3]", await Run(client, "UNSUBSCRIBE", Name('d')));

        // Unsubscribing gives the room back, and RESET all of it.
        Assert.Equal($"*[$unsubscribe, ${Name('a')}, :2]", await Run(client, "UNSUBSCRIBE", Name('a')));
        Assert.Equal($"*[$subscribe, ${Name('d')}, :3]", await Run(client, "SUBSCRIBE", Name('d')));
        Assert.Equal("+RESET", await Run(client, "RESET"));
        await client.SendCommandAsync("PSUBSCRIBE", Name('e'), Name('f'), Name('g'));
        for (var i = 1; i <= 3; i++)
        {
            Assert.Equal($"*[$psubscribe, ${Name((char)('d' + i))}, :{i}]", (await client.ReadAsync()).ToString());
        }
    }

    [Fact]
    public async Task SubscribeInRespThreeUsesPushesAndKeepsOtherCommands()
    {
        await using var client = new TestServer().Connect();
        await client.CommandAsync("HELLO", "3");
        Assert.Equal(">[$subscribe, $ch, :1]", await Run(client, "SUBSCRIBE", "ch"));
        Assert.Equal("_", await Run(client, "GET", "k"));
        Assert.Equal("+PONG", await Run(client, "PING"));
    }

    [Fact]
    public async Task CommandsAreCaseInsensitive()
    {
        await using var client = new TestServer().Connect();
        Assert.Equal("+OK", await Run(client, "sEt", "k", "v", "ex", "10", "nX"));
        Assert.Equal("$v", await Run(client, "gEt", "k"));
        Assert.Equal(":1", await Run(client, "Client", "Id"));
        Assert.Equal("+OK", await Run(client, "ReadOnly"));
    }
}
