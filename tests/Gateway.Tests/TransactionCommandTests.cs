using Dcache.Gateway.Cluster;
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
        Assert.Equal("+OK", await Run("WATCH", "a"));
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
    public async Task Exec_carries_each_watched_key_with_the_index_and_liveness_its_watch_read_and_applies_when_none_changed()
    {
        _server.Cluster.Put("a", "1");
        Assert.Equal("+OK", await Run("WATCH", "a", "absent"));
        await using var other = _server.Connect();
        await other.CommandAsync("SET", "b", "2");
        Assert.Equal("+OK", await Run("WATCH", "b", "a"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("INCR", "a"));
        Assert.Equal("*[:2]", await Run("EXEC"));

        var reads = _server.Cluster.Executed.Where(executed => executed.Command.OpCase == Command.OpOneofCase.Watch).ToList();
        Assert.Equal(2, reads.Count);
        Assert.All(reads, read => Assert.Equal(ReadMode.Linearizable, read.Mode));
        var exec = _server.Cluster.Executed.Last(executed => executed.Command.OpCase == Command.OpOneofCase.Transaction).Command.Transaction;
        Assert.True(exec.Watched);

        // The first WATCH of a key wins (a, read with absent before b's write); b was read after it.
        Assert.Equal(["a", "absent", "b"], exec.Watches.Select(watch => watch.Key.ToStringUtf8()));
        Assert.Equal([true, false, true], exec.Watches.Select(watch => watch.Live));
        Assert.Equal(exec.Watches[0].WatchedAt, exec.Watches[1].WatchedAt);
        Assert.True(exec.Watches[2].WatchedAt > exec.Watches[0].WatchedAt);

        // EXEC forgot the watches: the next transaction carries none.
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("INCR", "a"));
        Assert.Equal("*[:3]", await Run("EXEC"));
        Assert.False(_server.Cluster.Executed.Last(executed => executed.Command.OpCase == Command.OpOneofCase.Transaction).Command.Transaction.Watched);
    }

    [Fact]
    public async Task A_watched_key_changed_by_another_connection_or_this_one_makes_exec_answer_the_nil_array_and_apply_nothing()
    {
        _server.Cluster.Put("k", "1");
        await using var other = _server.Connect();
        Assert.Equal("+OK", await Run("WATCH", "k"));
        await other.CommandAsync("SET", "k", "1");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "x", "1"));
        Assert.Equal("*nil", await Run("EXEC"));
        Assert.Equal("$nil", await Run("GET", "x"));

        Assert.Equal("+OK", await Run("WATCH", "k"));
        Assert.Equal(":2", await Run("INCR", "k"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("*nil", await Run("EXEC"));

        // RESP3: the null.
        Assert.StartsWith("%", await Run("HELLO", "3"), StringComparison.Ordinal);
        Assert.Equal("+OK", await Run("WATCH", "k"));
        await other.CommandAsync("DEL", "k");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "x", "1"));
        Assert.Equal("_", await Run("EXEC"));
    }

    [Fact]
    public async Task Unwatch_and_discard_forget_the_watches_and_an_empty_exec_still_checks_them()
    {
        _server.Cluster.Put("k", "1");
        await using var other = _server.Connect();
        Assert.Equal("+OK", await Run("WATCH", "k"));
        await other.CommandAsync("SET", "k", "2");
        Assert.Equal("+OK", await Run("UNWATCH"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("*[]", await Run("EXEC"));

        Assert.Equal("+OK", await Run("WATCH", "k"));
        await other.CommandAsync("SET", "k", "3");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+OK", await Run("DISCARD"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "x", "1"));
        Assert.Equal("*[+OK]", await Run("EXEC"));

        // With watches, an EXEC with nothing for the cluster goes there all the same: nil when the key changed.
        Assert.Equal("+OK", await Run("WATCH", "k"));
        await other.CommandAsync("SET", "k", "4");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("PING"));
        Assert.Equal("*nil", await Run("EXEC"));
        Assert.Equal("+OK", await Run("WATCH", "k"));
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("PING"));
        Assert.Equal("*[+PONG]", await Run("EXEC"));
    }

    [Fact]
    public async Task A_pipelined_watch_reads_after_the_writes_before_it_and_is_in_place_before_what_follows()
    {
        _server.Cluster.Put("k", "1");
        string[][] pipeline =
        [
            ["SET", "k", "2"], ["WATCH", "k"], ["SET", "k", "3"], ["MULTI"], ["SET", "x", "1"], ["EXEC"],
            ["WATCH", "k"], ["UNWATCH"], ["SET", "k", "4"], ["MULTI"], ["SET", "y", "1"], ["EXEC"],
            ["WATCH", "k"], ["MULTI"], ["DISCARD"], ["SET", "k", "5"], ["MULTI"], ["SET", "z", "1"], ["EXEC"],

            // An EXEC refused at once (its arity) forgets the watches too, as in Redis, though the WATCH's reply comes later.
            ["WATCH", "k"], ["EXEC", "x"], ["SET", "k", "6"], ["MULTI"], ["SET", "w", "1"], ["EXEC"],
        ];
        await _client.SendAsync(pipeline.SelectMany(command => TestConnection.Encode(command)).ToArray());
        var replies = new List<RespValue>();
        foreach (var _ in pipeline)
        {
            replies.Add(await _client.ReadAsync());
        }

        Assert.Equal(
            ["+OK", "+OK", "+OK", "+OK", "+QUEUED", "*nil", "+OK", "+OK", "+OK", "+OK", "+QUEUED", "*[+OK]", "+OK", "+OK", "+OK", "+OK", "+OK", "+QUEUED", "*[+OK]",
             "+OK", "-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command", "+OK", "+OK", "+QUEUED", "*[+OK]"],
            replies.Select(reply => reply.ToString()));
    }

    [Fact]
    public async Task A_pipelined_watch_is_sent_only_once_the_writes_before_it_answered()
    {
        _server.Cluster.Put("k", "1");
        _server.Cluster.Hold();
        await _client.SendAsync(TestConnection.Encode("SET", "k", "2").Concat(TestConnection.Encode("WATCH", "k"))
            .Concat(TestConnection.Encode("MULTI")).Concat(TestConnection.Encode("SET", "x", "1")).Concat(TestConnection.Encode("EXEC")).ToArray());
        await _server.Cluster.WaitForExecutedAsync(1, TestConnection.Timeout);
        await _server.Cluster.WaitForInFlightAsync(1, TestConnection.Timeout);

        // Only the SET reached the cluster while it is held: the WATCH reads after it (else the SET could land after
        // the read and abort the transaction on the connection's own earlier write).
        Assert.Single(_server.Cluster.Executed);
        _server.Cluster.Release();
        foreach (var expected in new[] { "+OK", "+OK", "+OK", "+QUEUED", "*[+OK]" })
        {
            Assert.Equal(expected, (await _client.ReadAsync()).ToString());
        }

        Assert.Equal(
            [Command.OpOneofCase.Set, Command.OpOneofCase.Watch, Command.OpOneofCase.Transaction],
            _server.Cluster.Executed.Select(executed => executed.Command.OpCase));
    }

    [Fact]
    public async Task The_first_watch_on_a_cluster_starts_its_revisions_and_one_still_at_format_7_refuses_watch_and_the_exec_after_it()
    {
        _server.Cluster.RevisionsStarted = false;
        Assert.Equal("+OK", await Run("WATCH", "a"));
        var sent = _server.Cluster.Executed.Select(executed => executed.Command).ToList();
        Assert.Equal([Command.OpOneofCase.Watch, Command.OpOneofCase.Transaction, Command.OpOneofCase.Watch], sent.Select(command => command.OpCase));
        Assert.True(sent[1].Transaction.Watched);
        Assert.Empty(sent[1].Transaction.Commands);
        Assert.Empty(sent[1].Transaction.Watches);
        Assert.Equal("+OK", await Run("UNWATCH"));

        _server.Cluster.RevisionsStarted = false;
        _server.Cluster.AcceptsWatchedTransactions = false;
        Assert.Equal("-ERR WATCH needs every node on a build that reads log format 8 (a rolling upgrade is in progress)", await Run("WATCH", "a"));
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
    public async Task A_watch_whose_read_fails_answers_the_failure_and_refuses_the_next_exec()
    {
        _server.Cluster.Script = command => command.OpCase == Command.OpOneofCase.Watch
            ? new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = "no leader" } }
            : null;
        Assert.StartsWith("-", await Run("WATCH", "a"), StringComparison.Ordinal);
        _server.Cluster.Script = null;
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "b", "1"));
        Assert.Equal("-" + TransactionCommands.ExecAfterWatch, await Run("EXEC"));
    }

    [Fact]
    public async Task A_watch_whose_read_throws_refuses_the_next_exec()
    {
        // The cluster client fails the read instead of answering it (the connection answers TRYAGAIN): the failed WATCH
        // must still refuse the next EXEC, or the transaction applies with no check at all.
        _server.Cluster.Script = command => command.OpCase == Command.OpOneofCase.Watch
            ? throw new InvalidOperationException("the cluster client failed")
            : null;
        Assert.StartsWith("-", await Run("WATCH", "a"), StringComparison.Ordinal);
        _server.Cluster.Script = null;
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "b", "1"));
        Assert.Equal("-" + TransactionCommands.ExecAfterWatch, await Run("EXEC"));
    }

    [Fact]
    public async Task Watched_keys_are_bounded_by_max_request_bytes_and_a_watch_past_it_refuses_the_next_exec()
    {
        // Each key costs its bytes and the overhead of keeping it: room for three keys of 30 bytes, not four.
        const int keyCost = 30 + ClientState.WatchedKeyOverheadBytes;
        const int limit = (3 * keyCost) + 10;
        var server = new TestServer(options => options.MaxRequestBytes = limit);
        await using var client = server.Connect();
        async Task<string> Run(params string[] arguments) => (await client.CommandAsync(arguments)).ToString();
        string Key(char c) => new(c, 30);

        Assert.Equal("+OK", await Run("WATCH", Key('a'), Key('b')));
        Assert.Equal("+OK", await Run("WATCH", Key('c'), Key('a'))); // three keys: a key watched again counts once
        Assert.Equal("-" + TransactionCommands.WatchTooLarge(limit), await Run("WATCH", Key('d')));
        var watchReads = server.Cluster.Executed.Count(executed => executed.Command.OpCase == Command.OpOneofCase.Watch);
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "x", "1"));
        Assert.Equal("-" + TransactionCommands.ExecAfterWatch, await Run("EXEC"));
        Assert.Equal(2, watchReads); // the refused WATCH read nothing

        // EXEC forgot the watches, and UNWATCH does too: the room is there again.
        Assert.Equal("+OK", await Run("WATCH", Key('d'), Key('e')));
        Assert.Equal("+OK", await Run("WATCH", Key('f')));
        Assert.Equal("+OK", await Run("UNWATCH"));
        Assert.Equal("+OK", await Run("WATCH", Key('g'), Key('h')));
    }

    [Fact]
    public async Task A_transactions_queue_is_bounded_by_what_its_commands_take_not_only_their_argument_bytes()
    {
        // GET "" has 3 bytes of arguments; queued, it takes a request, offsets and a slot too. Counted by bytes alone,
        // 333 would fit in 1,000 bytes and a queue of them cost about 30 times its count.
        const int cost = 3 + TransactionCommands.QueuedCommandCost + (2 * TransactionCommands.QueuedArgumentCost);
        const int limit = 1_000;
        var server = new TestServer(options => options.MaxRequestBytes = limit);
        await using var client = server.Connect();
        async Task<string> Run(params string[] arguments) => (await client.CommandAsync(arguments)).ToString();

        Assert.Equal("+OK", await Run("MULTI"));
        for (var i = 0; i < limit / cost; i++)
        {
            Assert.Equal("+QUEUED", await Run("GET", ""));
        }

        Assert.StartsWith("-ERR transaction too large", await Run("GET", ""), StringComparison.Ordinal);
        Assert.StartsWith("-EXECABORT", await Run("EXEC"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_readonly_connection_watches_with_a_linearizable_read()
    {
        Assert.Equal("+OK", await Run("READONLY"));
        Assert.Equal("+OK", await Run("WATCH", "a"));
        Assert.Equal(ReadMode.Linearizable, Assert.Single(_server.Cluster.Executed, executed => executed.Command.OpCase == Command.OpOneofCase.Watch).Mode);
    }

    [Fact]
    public async Task A_gateway_serving_reads_locally_still_watches_with_a_linearizable_read()
    {
        var server = new TestServer(localReads: true);
        await using var client = server.Connect();
        Assert.Equal("$nil", (await client.CommandAsync("GET", "a")).ToString());
        Assert.Equal("+OK", (await client.CommandAsync("WATCH", "a")).ToString());
        Assert.Equal(ReadMode.Local, Assert.Single(server.Cluster.Executed, executed => executed.Command.OpCase == Command.OpOneofCase.Get).Mode);
        Assert.Equal(ReadMode.Linearizable, Assert.Single(server.Cluster.Executed, executed => executed.Command.OpCase == Command.OpOneofCase.Watch).Mode);
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

    [Fact]
    public async Task A_transactions_queue_may_take_exactly_max_request_bytes()
    {
        const int cost = 3 + TransactionCommands.QueuedCommandCost + (2 * TransactionCommands.QueuedArgumentCost);
        const int limit = 10 * cost;
        var server = new TestServer(options => options.MaxRequestBytes = limit);
        await using var client = server.Connect();
        async Task<string> Run(params string[] arguments) => (await client.CommandAsync(arguments)).ToString();

        Assert.Equal("+OK", await Run("MULTI"));
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal("+QUEUED", await Run("GET", ""));
        }

        Assert.StartsWith("-ERR transaction too large", await Run("GET", ""), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Watched_keys_may_take_exactly_max_request_bytes()
    {
        const int keyCost = 30 + ClientState.WatchedKeyOverheadBytes;
        const int limit = 3 * keyCost;
        var server = new TestServer(options => options.MaxRequestBytes = limit);
        await using var client = server.Connect();
        async Task<string> Run(params string[] arguments) => (await client.CommandAsync(arguments)).ToString();

        Assert.Equal("+OK", await Run("WATCH", new string('a', 30), new string('b', 30), new string('c', 30)));
        Assert.Equal("-" + TransactionCommands.WatchTooLarge(limit), await Run("WATCH", new string('d', 30)));
    }

    [Fact]
    public async Task Dbsize_is_queued_inside_multi_and_answered_in_its_slot()
    {
        _server.Cluster.Put("a", "1");
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "b", "2"));
        Assert.Equal("+QUEUED", await Run("DBSIZE"));
        Assert.Equal("*[+OK, :2]", await Run("EXEC"));
    }

    [Theory]
    [InlineData("NOPE", "x")]
    [InlineData("GET")]
    [InlineData("CLIENT", "NOPE")]
    public async Task One_command_the_dispatcher_refuses_while_queuing_is_enough_to_abort_the_exec(params string[] refused)
    {
        Assert.Equal("+OK", await Run("MULTI"));
        Assert.Equal("+QUEUED", await Run("SET", "a", "1"));
        Assert.StartsWith("-ERR ", await Run(refused), StringComparison.Ordinal);
        Assert.Equal("-EXECABORT Transaction discarded because of previous errors.", await Run("EXEC"));
        Assert.Empty(_server.Cluster.Executed);
    }
}
