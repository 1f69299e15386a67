using Dcache.Gateway.Commands;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>MULTI/EXEC/DISCARD/WATCH through the real connection handler, against the in-memory cluster.</summary>
public sealed class TransactionCommandTests : IAsyncLifetime
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

    [Fact]
    public async Task Exec_sends_the_queued_commands_as_one_write_and_answers_each_in_its_slot()
    {
        _server.Cluster.Put("text", "abc");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "1"));
        Assert.Equal("+QUEUED", await Run("INCR", "a"));
        Assert.Equal("+QUEUED", await Run("INCR", "text"));
        Assert.Equal("+QUEUED", await Run("SET", "k", "v", "BADOPTION"));
        Assert.Equal("+QUEUED", await Run("SETNX", "a", "9"));
        Assert.Equal("+QUEUED", await Run("TYPE", "a"));
        Assert.Equal("+QUEUED", await Run("PING"));
        Assert.Equal("+QUEUED", await Run("MGET", "a", "none"));
        Assert.Empty(_server.Cluster.Executed);

        Assert.Equal(
            "*[+OK, :2, -ERR value is not an integer or out of range, -ERR syntax error, :0, +string, +PONG, *[$2, $nil]]",
            await Run("EXEC"));

        var executed = Assert.Single(_server.Cluster.Executed);
        Assert.Equal(Command.OpOneofCase.Transaction, executed.Command.OpCase);
        Assert.NotEqual(0UL, executed.Command.ClientId);
        Assert.Equal(
            [Command.OpOneofCase.Set, Command.OpOneofCase.IncrBy, Command.OpOneofCase.IncrBy, Command.OpOneofCase.Set, Command.OpOneofCase.Type, Command.OpOneofCase.Mget],
            executed.Command.Transaction.Commands.Select(command => command.OpCase));
        Assert.Equal("-ERR EXEC without MULTI", await Run("EXEC"));
    }

    [Fact]
    public async Task A_command_refused_while_queuing_aborts_the_exec()
    {
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "1"));
        Assert.Equal("-ERR unknown command 'NOPE', with args beginning with: 'x' ", await Run("NOPE", "x"));
        Assert.Equal("-ERR wrong number of arguments for 'get' command", await Run("GET"));
        Assert.Equal("-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.", await Run("CLIENT", "NOPE"));
        Assert.Equal("-" + "ERR Command not allowed inside a transaction", await Run("KEYS", "*"));
        Assert.Equal("-EXECABORT Transaction discarded because of previous errors.", await Run("EXEC"));
        Assert.Empty(_server.Cluster.Executed);
        Assert.Equal("$nil", await Run("GET", "a"));
    }

    [Theory]
    [InlineData("SCAN", "0")]
    [InlineData("RANDOMKEY")]
    [InlineData("INFO")]
    [InlineData("HELLO", "3")]
    [InlineData("AUTH", "secret")]
    [InlineData("SUBSCRIBE", "channel")]
    [InlineData("CONFIG", "GET", "timeout")]
    public async Task Commands_the_cluster_cannot_run_in_one_step_are_refused_inside_multi(params string[] command)
    {
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("-ERR Command not allowed inside a transaction", await Run(command));
        Assert.Equal("-EXECABORT Transaction discarded because of previous errors.", await Run("EXEC"));
    }

    [Fact]
    public async Task Errors_worded_as_redis_7_words_them()
    {
        Assert.Equal("-ERR EXEC without MULTI", await Run("EXEC"));
        Assert.Equal("-ERR DISCARD without MULTI", await Run("DISCARD"));
        Assert.Equal("-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command", await Run("EXEC", "x"));
        Assert.StartsWith("-ERR WATCH is not supported", await Run("WATCH", "a"), StringComparison.Ordinal);
        Assert.Equal("+OK", await Run("UNWATCH"));

        // Nested MULTI and WATCH inside MULTI are refused without failing the transaction, as in Redis.
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("-ERR MULTI calls can not be nested", await Run("MULTI"));
        Assert.Equal("-ERR WATCH inside MULTI is not allowed", await Run("WATCH", "a"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "1"));
        Assert.Equal("*[+OK]", await Run("EXEC"));

        // A refused EXEC inside MULTI discards the transaction.
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "2"));
        Assert.Equal("-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command", await Run("EXEC", "x"));
        Assert.Equal("-ERR EXEC without MULTI", await Run("EXEC"));
        Assert.Equal("$1", await Run("GET", "a"));
    }

    [Fact]
    public async Task An_exec_after_a_refused_watch_is_refused_until_unwatch_exec_or_discard()
    {
        Assert.StartsWith("-ERR WATCH is not supported", await Run("WATCH", "a"), StringComparison.Ordinal);
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "b", "1"));
        Assert.Equal("-" + TransactionCommands.ExecAfterWatch, await Run("EXEC"));
        Assert.Equal("$nil", await Run("GET", "b"));

        // The refusal lasts one EXEC, as a watch does; UNWATCH and DISCARD end it too.
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "b", "1"));
        Assert.Equal("*[+OK]", await Run("EXEC"));
        Assert.StartsWith("-ERR WATCH", await Run("WATCH", "a"), StringComparison.Ordinal);
        Assert.Equal("+OK", await Run("UNWATCH"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("*[]", await Run("EXEC"));
        Assert.StartsWith("-ERR WATCH", await Run("WATCH", "a"), StringComparison.Ordinal);
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+OK", await Run("DISCARD"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("*[]", await Run("EXEC"));
    }

    [Fact]
    public async Task Discard_drops_the_queue_and_an_empty_exec_answers_an_empty_array()
    {
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "1"));
        Assert.Equal("+OK", await Run("DISCARD"));
        Assert.Equal("$nil", await Run("GET", "a"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("*[]", await Run("EXEC"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("PING"));
        Assert.Equal("+QUEUED", await Run("ECHO", "hi"));
        Assert.Equal("*[+PONG, $hi]", await Run("EXEC"));
        Assert.Single(_server.Cluster.Executed, executed => executed.Command.OpCase == Command.OpOneofCase.Get);
        Assert.DoesNotContain(_server.Cluster.Executed, executed => executed.Command.OpCase == Command.OpOneofCase.Transaction);
    }

    [Fact]
    public async Task A_transaction_the_cluster_did_not_apply_answers_the_cluster_error_for_the_whole_exec()
    {
        _server.Cluster.Script = command => command.OpCase == Command.OpOneofCase.Transaction
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost" } }
            : null;
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("INCR", "a"));
        Assert.Equal("+QUEUED", await Run("GET", "a"));
        var reply = await Run("EXEC");
        Assert.StartsWith("-UNKNOWN", reply, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_pipelined_transaction_orders_after_the_commands_before_it_and_before_those_after_it()
    {
        _server.Cluster.Hold();
        await _client.SendAsync(TestConnection.Encode("SET", "a", "1")
            .Concat(TestConnection.Encode("MULTI")).Concat(TestConnection.Encode("INCR", "a")).Concat(TestConnection.Encode("EXEC"))
            .Concat(TestConnection.Encode("GET", "a")).ToArray());
        await _server.Cluster.WaitForExecutedAsync(1, TestConnection.Timeout);
        await _server.Cluster.WaitForInFlightAsync(1, TestConnection.Timeout);

        // The transaction waits for the SET before it: only the SET reached the cluster while it is held.
        Assert.Single(_server.Cluster.Executed);
        _server.Cluster.Release();
        await _server.Cluster.WaitForExecutedAsync(2, TestConnection.Timeout);
        _server.Cluster.Release();
        await _server.Cluster.WaitForExecutedAsync(3, TestConnection.Timeout);
        _server.Cluster.Release();
        Assert.Equal("+OK", (await _client.ReadAsync()).ToString());
        Assert.Equal("+OK", (await _client.ReadAsync()).ToString());
        Assert.Equal("+QUEUED", (await _client.ReadAsync()).ToString());
        Assert.Equal("*[:2]", (await _client.ReadAsync()).ToString());
        Assert.Equal("$2", (await _client.ReadAsync()).ToString());
        Assert.Equal(
            [Command.OpOneofCase.Set, Command.OpOneofCase.Transaction, Command.OpOneofCase.Get],
            _server.Cluster.Executed.Select(executed => executed.Command.OpCase));
    }
}
