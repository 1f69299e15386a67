using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Dcache.Gateway.Tests.Support;
using Dcache.Integration.Tests.Support;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>MULTI/EXEC through real clients on a real 3-node cluster: one log entry per transaction, nothing between its commands.</summary>
public sealed class GatewayTransactionTests(ITestOutputHelper output)
{
    [Fact]
    public async Task StackExchangeRedisTransactionsAndRedisCliMultiExecApplyTheirCommandsTogether()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = redis.GetDatabase();
        await db.StringSetAsync("text", "abc");

        var transaction = db.CreateTransaction();
        var set = transaction.StringSetAsync("a", "1");
        var incremented = transaction.StringIncrementAsync("a", 41);
        var read = transaction.StringGetAsync(["a", "missing"]);
        var failed = transaction.StringIncrementAsync("text");
        var length = transaction.StringAppendAsync("text", "def");
        Assert.True(await transaction.ExecuteAsync());
        Assert.True(await set);
        Assert.Equal(42, await incremented);
        Assert.Equal(["42", null], (await read).Select(value => (string?)value));
        var error = await Assert.ThrowsAsync<RedisServerException>(() => failed);
        Assert.Contains("not an integer", error.Message, StringComparison.Ordinal);
        Assert.Equal(6, await length);
        Assert.Equal("abcdef", (string?)await db.StringGetAsync("text"));

        // Conditions: the library WATCHes their keys, checks them, and sends MULTI/EXEC (or UNWATCH when one fails).
        var conditional = db.CreateTransaction();
        conditional.AddCondition(Condition.KeyExists("a"));
        conditional.AddCondition(Condition.StringEqual("a", "42"));
        conditional.AddCondition(Condition.KeyNotExists("b"));
        var conditionalSet = conditional.StringSetAsync("b", "set");
        Assert.True(await conditional.ExecuteAsync());
        Assert.True(await conditionalSet);
        Assert.Equal("set", (string?)await db.StringGetAsync("b"));

        var unmet = db.CreateTransaction();
        unmet.AddCondition(Condition.StringEqual("a", "41"));
        _ = unmet.StringSetAsync("b", "never");
        Assert.False(await unmet.ExecuteAsync());
        Assert.Equal("set", (string?)await db.StringGetAsync("b"));

        var (exit, cli) = await RedisTools.RedisCliScriptAsync(cluster.GatewayPort, "MULTI", "SET c 5", "INCRBY c 10", "GET c", "TTL c", "EXEC", "DISCARD", "GET c");
        Assert.Equal(0, exit);
        Assert.Equal("OK\nQUEUED\nQUEUED\nQUEUED\nQUEUED\nOK\n15\n15\n-1\nERR DISCARD without MULTI\n\n15\n", cli);
    }

    [Fact]
    public async Task CheckAndSetRacesNeverLoseAnIncrement()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        // Each client: WATCH k, GET k, MULTI, SET k (v + 1), EXEC, again on nil. Every EXEC that applied must show in
        // the final count, and only those: a missed change would apply an increment computed from a stale value.
        const int Clients = 6;
        const int IncrementsPerClient = 15;
        var attempts = 0;
        var clients = Enumerable.Range(0, Clients).Select(_ => Task.Run(async () =>
        {
            using var client = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
            var applied = 0;
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            while (applied < IncrementsPerClient && DateTime.UtcNow < deadline)
            {
                Interlocked.Increment(ref attempts);
                Assert.Equal("+OK", (await client.CommandAsync(Args("WATCH", "k"))).ToString());
                var current = await client.CommandAsync(Args("GET", "k"));
                var value = current.Bytes is null ? 0 : long.Parse(current.Text!, System.Globalization.CultureInfo.InvariantCulture);
                Assert.Equal("+OK", (await client.CommandAsync(Args("MULTI"))).ToString());
                Assert.Equal("+QUEUED", (await client.CommandAsync(Args("SET", "k", (value + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)))).ToString());
                var exec = (await client.CommandAsync(Args("EXEC"))).ToString();
                if (exec == "*[+OK]")
                {
                    applied++;
                }
                else
                {
                    Assert.Equal("*nil", exec);
                }
            }

            return applied;
        })).ToArray();

        var successes = (await Task.WhenAll(clients)).Sum();
        await using var redis = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var final = (long)await redis.GetDatabase().StringGetAsync("k");
        output.WriteLine($"{successes} EXECs applied in {attempts} attempts; final value {final}");
        Assert.Equal(Clients * IncrementsPerClient, successes);
        Assert.Equal(successes, final);
        Assert.True(attempts > successes, "the clients never raced (no EXEC answered nil): the test proved nothing");
    }

    private static byte[][] Args(params string[] arguments) => arguments.Select(System.Text.Encoding.UTF8.GetBytes).ToArray();

    [Fact]
    public async Task ConcurrentTransactionsIncrementingTwoKeysNeverLetAReaderSeeThemDiffer()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        const int Writers = 4;
        const int TransactionsPerWriter = 40;
        // A connection each: commands of one connection are ordered by the gateway's pipeline, so a reader sharing the
        // writers' connection could never fall between two of their writes anyway.
        await using var reader = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
        var db = reader.GetDatabase();
        var writers = Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            await using var writer = await ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{cluster.GatewayPort}");
            var writes = writer.GetDatabase();
            for (var i = 0; i < TransactionsPerWriter; i++)
            {
                var transaction = writes.CreateTransaction();
                var a = transaction.StringIncrementAsync("a");
                var b = transaction.StringIncrementAsync("b");
                Assert.True(await transaction.ExecuteAsync());
                Assert.Equal(await a, await b);
            }
        })).ToArray();

        // MGET is one read: between two separate entries it would see a ahead of b.
        var reads = 0;
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (!writers.All(writer => writer.IsCompleted) && DateTime.UtcNow < deadline)
        {
            var values = await db.StringGetAsync(["a", "b"]);
            Assert.True((long?)values[0] == (long?)values[1], $"a = {values[0]}, b = {values[1]}");
            reads++;
        }

        await Task.WhenAll(writers);
        output.WriteLine($"{reads} reads while {Writers * TransactionsPerWriter} transactions applied");
        Assert.Equal([Writers * TransactionsPerWriter, Writers * TransactionsPerWriter], (await db.StringGetAsync(["a", "b"])).Select(value => (long)value));
        Assert.True(reads > 0);
    }
    [Fact]
    public async Task KillingTheLeaderThriceUnder20TransactionClientsTearsNoPairAndAppliesNoExecTwice()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));

        // Client c alone writes a:c and b:c, always as MULTI; INCR a:c; INCRBY b:c 2; EXEC, so b:c = 2 a:c whenever no
        // transaction is torn, and a:c counts the EXECs that applied: each acknowledged one, and perhaps an UNKNOWN one.
        const int Clients = 20;
        var clock = Stopwatch.StartNew();
        var acknowledged = new int[Clients];
        var unknown = new int[Clients];
        var acknowledgedAt = new ConcurrentQueue<TimeSpan>();
        var errors = new ConcurrentQueue<string>();
        var violations = new ConcurrentQueue<string>();
        var pairsRead = 0;
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4)); // bound, whatever happens

        // A pair as MGET answered it; with bounds, a:c must also lie between the EXECs acknowledged and those plus the UNKNOWNs.
        void CheckPair(string who, RespValue reply, (int Acknowledged, int Unknown)? bounds = null)
        {
            if (reply.IsError)
            {
                errors.Enqueue(reply.Text!);
                return;
            }

            if (reply is not { Type: '*', Items: [var first, var second] })
            {
                violations.Enqueue($"{who}: MGET answered {reply}");
                return;
            }

            var (a, b) = (Count(first), Count(second));
            Interlocked.Increment(ref pairsRead);
            if (b != 2 * a)
            {
                violations.Enqueue($"{who}: torn pair a = {a}, b = {b}");
            }

            if (bounds is var (low, unknowns) && (a < low || a > low + unknowns))
            {
                violations.Enqueue($"{who}: a = {a} after {low} acknowledged EXECs and {unknowns} UNKNOWN");
            }
        }

        var writers = Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            using var client = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
            var (a, b) = ($"a:{c}", $"b:{c}");
            RedisDifferentialTests.GeneratedCommand[] round = [Command("MULTI"), Command("INCR", a), Command("INCRBY", b, "2"), Command("EXEC"), Command("MGET", a, b)];
            for (var n = 0; n < 100_000 && !stop.IsCancellationRequested; n++)
            {
                var replies = await client.PipelineAsync(round);
                var queuing = string.Join(" ", replies.Take(3));
                if (queuing != "+OK +QUEUED +QUEUED")
                {
                    violations.Enqueue($"client {c}: MULTI, INCR, INCRBY answered {queuing}");
                }

                switch (replies[3])
                {
                    case { Type: '*', Items: [{ Type: ':' } incremented, { Type: ':' } incrementedBy] }:
                        acknowledged[c]++;
                        acknowledgedAt.Enqueue(clock.Elapsed);
                        if (incrementedBy.Integer != 2 * incremented.Integer)
                        {
                            violations.Enqueue($"client {c}: EXEC answered a torn pair {replies[3]}");
                        }

                        if (incremented.Integer < acknowledged[c] || incremented.Integer > acknowledged[c] + unknown[c])
                        {
                            violations.Enqueue($"client {c}: EXEC answered a = {incremented.Integer} as its EXEC number {acknowledged[c]}, with {unknown[c]} UNKNOWN before");
                        }

                        break;
                    case { IsError: true } error:
                        errors.Enqueue(error.Text!);
                        if (error.Text!.StartsWith("UNKNOWN ", StringComparison.Ordinal))
                        {
                            unknown[c]++;
                        }

                        break;
                    default:
                        violations.Enqueue($"client {c}: EXEC answered {replies[3]}");
                        break;
                }

                CheckPair($"client {c}", replies[4], (acknowledged[c], unknown[c]));
            }
        })).ToList();

        // A reader on a connection of its own: each client's pair, read in a transaction of its own (which runs in the log).
        var reader = Task.Run(async () =>
        {
            using var client = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
            for (var n = 0; n < 1_000_000 && !stop.IsCancellationRequested; n++)
            {
                var c = n % Clients;
                var replies = await client.PipelineAsync([Command("MULTI"), Command("MGET", $"a:{c}", $"b:{c}"), Command("EXEC")]);
                CheckPair($"reader of {c}", replies[2] is { Type: '*', Items: [var pair] } ? pair : replies[2]);
            }
        });

        // Three leaders killed in turn, each restarted and caught up before the next kill: one kill alone lands in the
        // window where an EXEC applied but its reply was lost (so the gateway retries it) in about one run in three.
        const int Kills = 3;
        // Enough for the clients to be at full rate around each kill; more only made the test longer.
        const int ExecsPerPhase = 150;
        try
        {
            for (var kill = 1; kill <= Kills; kill++)
            {
                var before = acknowledgedAt.Count;
                await Eventually.WaitAsync(() => acknowledgedAt.Count >= before + ExecsPerPhase, TimeSpan.FromSeconds(60), $"{ExecsPerPhase} acknowledged EXECs before kill {kill}");
                var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
                cluster[leader].Kill();
                var killedAt = clock.Elapsed;
                await Eventually.WaitAsync(() => acknowledgedAt.Any(t => t > killedAt), TimeSpan.FromSeconds(15), $"an EXEC acknowledged after kill {kill}");
                var atKill = acknowledgedAt.Count;
                await Eventually.WaitAsync(() => acknowledgedAt.Count >= atKill + ExecsPerPhase, TimeSpan.FromSeconds(60), $"{ExecsPerPhase} more acknowledged EXECs after kill {kill}");

                // The pause the clients saw: the longest stretch without any acknowledged EXEC, from the kill on.
                var after = acknowledgedAt.Where(t => t >= killedAt).Order().Prepend(killedAt).ToList();
                var resumedAfter = after.Zip(after.Skip(1), (previous, next) => next - previous).Max();
                output.WriteLine($"kill {kill} (node {leader}) at {killedAt.TotalSeconds:F1} s: longest pause in acknowledged EXECs after it: {resumedAfter.TotalMilliseconds:F0} ms; {ExecsPerPhase} more by {clock.Elapsed.TotalSeconds:F1} s");
                Assert.True(resumedAfter < TimeSpan.FromSeconds(3), $"transactions resumed only {resumedAfter.TotalSeconds:F2} s after kill {kill}");

                cluster[leader].Start();
                var commit = (await cluster.StatusAsync(await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30)))).CommitIndex;
                await Eventually.WaitAsync(async () => (await cluster.StatusAsync(leader)).AppliedIndex >= commit, TimeSpan.FromSeconds(30), $"node {leader} restarted and caught up");
            }
        }
        finally
        {
            await stop.CancelAsync();
        }

        await Task.WhenAll(writers.Append(reader));
        output.WriteLine($"{acknowledged.Sum()} EXECs acknowledged, {unknown.Sum()} UNKNOWN, {pairsRead} pairs read; errors: "
            + string.Join(", ", errors.GroupBy(e => e.Split(' ')[0]).Select(group => $"{group.Key} {group.Count()}")));
        Assert.True(violations.IsEmpty, string.Join(Environment.NewLine, violations.Take(10)));
        var undocumented = errors.Where(e => !GatewayFailoverTests.DocumentedErrorPrefixes.Any(p => e.StartsWith(p, StringComparison.Ordinal))).Distinct().ToList();
        Assert.True(undocumented.Count == 0, "errors outside the documented ones: " + string.Join(" | ", undocumented.Take(5)));

        // Exactly once: each client's a counts its acknowledged EXECs, plus at most its UNKNOWN ones, and b stayed 2a.
        using var check = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
        for (var c = 0; c < Clients; c++)
        {
            var final = await check.CommandAsync(Args("MGET", $"a:{c}", $"b:{c}"));
            Assert.True(final is { Type: '*', Items: [_, _] }, $"MGET of client {c}'s pair answered {final}");
            var (a, b) = (Count(final.Items![0]), Count(final.Items[1]));
            Assert.True(b == 2 * a, $"client {c}: torn pair a = {a}, b = {b}");
            Assert.True(a >= acknowledged[c] && a <= acknowledged[c] + unknown[c], $"client {c}: a = {a} after {acknowledged[c]} acknowledged EXECs and {unknown[c]} UNKNOWN");
        }
    }

    [Fact]
    public async Task KillingTheLeaderThriceUnderWatchCheckAndSetClientsLosesNoIncrementAndAnswersEachExecAsItApplied()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));

        // 12 clients increment 3 counters by check-and-set: WATCH k; GET k; MULTI; SET k v+1; EXEC. An EXEC that answers
        // [OK] wrote v+1 from v, so no two may answer for the same v+1 (a lost update), and the counter ends between the
        // EXECs acknowledged and those plus the UNKNOWN ones. A retried EXEC (its first attempt's reply lost with the
        // leader) must answer as its one apply did: nil for an aborted one, [OK] for one that applied.
        const int Clients = 12;
        const int Counters = 3;
        var clock = Stopwatch.StartNew();
        var acknowledged = new int[Counters];
        var unknown = new int[Counters];
        var written = new ConcurrentDictionary<(int Counter, long Value), int>();
        var acknowledgedAt = new ConcurrentQueue<TimeSpan>();
        var aborted = 0;
        var errors = new ConcurrentQueue<string>();
        var violations = new ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(4)); // bound, whatever happens

        var clients = Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            using var client = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
            for (var n = 0; n < 100_000 && !stop.IsCancellationRequested; n++)
            {
                var counter = (c + n) % Counters;
                var key = $"cas:{counter}";
                var read = await client.PipelineAsync([Command("WATCH", key), Command("GET", key)]);
                if (read[0].IsError || read[1].IsError)
                {
                    // The WATCH or the GET failed: the EXEC after it would be refused; start again.
                    errors.Enqueue((read[0].IsError ? read[0] : read[1]).Text!);
                    await client.CommandAsync(Args("UNWATCH"));
                    continue;
                }

                var next = Count(read[1]) + 1;
                var replies = await client.PipelineAsync([Command("MULTI"), Command("SET", key, next.ToString(CultureInfo.InvariantCulture)), Command("EXEC")]);
                switch (replies[2])
                {
                    case { Type: '*', Items: null }:
                        Interlocked.Increment(ref aborted);
                        break;
                    case { Type: '*', Items: [{ Type: '+', Text: "OK" }] }:
                        Interlocked.Increment(ref acknowledged[counter]);
                        acknowledgedAt.Enqueue(clock.Elapsed);
                        if (!written.TryAdd((counter, next), c))
                        {
                            violations.Enqueue($"client {c}: EXEC set {key} to {next}, which client {written[(counter, next)]} had set from the same value (a lost update)");
                        }

                        break;
                    case { IsError: true } error:
                        errors.Enqueue(error.Text!);
                        if (error.Text!.StartsWith("UNKNOWN ", StringComparison.Ordinal))
                        {
                            Interlocked.Increment(ref unknown[counter]);
                        }

                        break;
                    default:
                        violations.Enqueue($"client {c}: EXEC answered {replies[2]}");
                        break;
                }
            }
        })).ToList();

        try
        {
            const int ExecsPerPhase = 100;
            for (var kill = 1; kill <= 3; kill++)
            {
                var before = acknowledgedAt.Count;
                await Eventually.WaitAsync(() => acknowledgedAt.Count >= before + ExecsPerPhase, TimeSpan.FromSeconds(60), $"{ExecsPerPhase} acknowledged EXECs before kill {kill}");
                var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
                cluster[leader].Kill();
                var atKill = acknowledgedAt.Count;
                await Eventually.WaitAsync(() => acknowledgedAt.Count >= atKill + ExecsPerPhase, TimeSpan.FromSeconds(60), $"{ExecsPerPhase} more acknowledged EXECs after kill {kill}");
                cluster[leader].Start();
                var commit = (await cluster.StatusAsync(await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30)))).CommitIndex;
                await Eventually.WaitAsync(async () => (await cluster.StatusAsync(leader)).AppliedIndex >= commit, TimeSpan.FromSeconds(30), $"node {leader} restarted and caught up");
            }
        }
        finally
        {
            await stop.CancelAsync();
        }

        await Task.WhenAll(clients);
        output.WriteLine($"{acknowledged.Sum()} EXECs acknowledged, {aborted} nil, {unknown.Sum()} UNKNOWN; errors: "
            + string.Join(", ", errors.GroupBy(e => e.Split(' ')[0]).Select(group => $"{group.Key} {group.Count()}")));
        Assert.True(violations.IsEmpty, string.Join(Environment.NewLine, violations.Take(10)));
        Assert.True(aborted > 0, "no EXEC was aborted: the clients did not contend");
        var undocumented = errors.Where(e => !GatewayFailoverTests.DocumentedErrorPrefixes.Any(p => e.StartsWith(p, StringComparison.Ordinal))).Distinct().ToList();
        Assert.True(undocumented.Count == 0, "errors outside the documented ones: " + string.Join(" | ", undocumented.Take(5)));

        using var check = await RedisDifferentialTests.RespClient.OpenAsync(cluster.GatewayPort);
        for (var counter = 0; counter < Counters; counter++)
        {
            var value = Count(await check.CommandAsync(Args("GET", $"cas:{counter}")));
            Assert.True(value >= acknowledged[counter] && value <= acknowledged[counter] + unknown[counter], $"cas:{counter} = {value} after {acknowledged[counter]} acknowledged EXECs and {unknown[counter]} UNKNOWN");
        }
    }

    private static RedisDifferentialTests.GeneratedCommand Command(params string[] arguments) => new(Args(arguments));

    /// <summary>A counter as a bulk reply holds it: nil (never written) is 0.</summary>
    private static long Count(RespValue value) => value.Text is null ? 0 : long.Parse(value.Text, CultureInfo.InvariantCulture);
}
