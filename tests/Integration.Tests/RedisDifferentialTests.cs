using System.Buffers;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Dcache.Gateway.Tests.Support;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// The gateway against a real Redis 7.0 (Debian's redis-server): seeded random sequences of every cache command of
/// docs/protocol.md, valid and invalid, sent to both over raw RESP, replies compared exactly (type and bytes; error
/// texts too, since clients match on them). A failing run prints its seed; DCACHE_REDISDIFF_SEED=&lt;seed&gt; replays it
/// (DCACHE_REDISDIFF_COMMANDS changes the length of each sequence).
/// </summary>
public sealed class RedisDifferentialTests(ITestOutputHelper output)
{
    private const string SeedVariable = "DCACHE_REDISDIFF_SEED";
    private const string CommandsVariable = "DCACHE_REDISDIFF_COMMANDS";
    private const int Sequences = 3;
    private const int DefaultCommands = 2_000;

    /// <summary>Connections that start unauthenticated, to a Redis with requirepass and a gateway with RequirePass.</summary>
    private const int PasswordSessions = 3;
    private const string Password = "s3cret-pass";

    [Fact]
    public async Task TheGatewayAnswersEveryCacheCommandExactlyAsRedis7Does()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable(SeedVariable), CultureInfo.InvariantCulture, out var fixedSeed) ? fixedSeed : Random.Shared.Next(1, int.MaxValue / 2);
        var commands = int.TryParse(Environment.GetEnvironmentVariable(CommandsVariable), CultureInfo.InvariantCulture, out var fixedCommands) ? fixedCommands : DefaultCommands;
        output.WriteLine($"seed {seed} (replay: {SeedVariable}={seed} dotnet test tests/Integration.Tests -c Release --filter FullyQualifiedName~RedisDifferential)");

        await using var redis = await RedisServer.StartAsync();
        // One node: the comparison is about what the gateway and the state machine answer, not about replication
        // (the other integration tests cover that), and a single node's writes are the quickest.
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();

        using var toRedis = await RespClient.OpenAsync(redis.Port);
        using var toGateway = await RespClient.OpenAsync(cluster.GatewayPort);
        var mismatches = new List<string>();
        var clock = Stopwatch.StartNew();
        for (var sequence = 0; sequence < Sequences; sequence++)
        {
            // The last sequence runs in RESP3, where nils and some replies have types of their own. The second one is
            // pipelined, which the gateway runs concurrently on the cluster where keys differ: a connection must still
            // see the replies a Redis would give to the same commands one at a time.
            var resp3 = sequence == Sequences - 1;
            var pipelined = sequence == 1;
            await RunSequenceAsync(toRedis, toGateway, seed + sequence, commands, resp3, pipelined, password: false, mismatches);
        }

        // Then with a password: what a connection may do before AUTH (unknown commands and wrong arities are reported
        // first, as Redis does), and AUTH's and HELLO's answers. Each session starts a new, unauthenticated connection;
        // the data goes on from one session to the next, on both.
        await cluster.Gateway!.DisposeAsync();
        await cluster.StartGatewayAsync(new Dictionary<string, string> { ["Resp:RequirePass"] = Password });
        await using var redisWithPassword = await RedisServer.StartAsync(Password);
        using (var flush = await RespClient.OpenAsync(cluster.GatewayPort))
        {
            await flush.CommandAsync(Args("AUTH", Password));
            Assert.Equal("OK", (await flush.CommandAsync(Args("FLUSHALL"))).Text);
        }

        for (var session = 0; session < PasswordSessions; session++)
        {
            using var toRedisWithPassword = await RespClient.OpenAsync(redisWithPassword.Port);
            using var toGatewayWithPassword = await RespClient.OpenAsync(cluster.GatewayPort);
            await RunSequenceAsync(toRedisWithPassword, toGatewayWithPassword, seed + Sequences + session, commands / 10, resp3: session == 1, pipelined: session == 2, password: true, mismatches);

            // QUIT: +OK, authenticated or not, then the server closes the connection.
            Assert.Equal(Canonical(await toRedisWithPassword.CommandAsync(Args("QUIT"))), Canonical(await toGatewayWithPassword.CommandAsync(Args("QUIT"))));
            Assert.True(await toRedisWithPassword.IsClosedAsync() && await toGatewayWithPassword.IsClosedAsync(), "QUIT closes the connection");
        }

        output.WriteLine($"{Sequences} sequences of {commands} commands and {PasswordSessions} of {commands / 10} with a password in {clock.Elapsed.TotalSeconds:F1} s, {mismatches.Count} mismatches");
        Assert.True(mismatches.Count == 0,
            $"{mismatches.Count} replies differ from Redis (seed {seed}; replay with {SeedVariable}={seed}):{Environment.NewLine}"
            + string.Join(Environment.NewLine, mismatches.Take(40)));
    }

    private async Task RunSequenceAsync(RespClient toRedis, RespClient toGateway, int seed, int commands, bool resp3, bool pipelined, bool password, List<string> mismatches)
    {
        var protocol = resp3 ? "3" : "2";
        // Before AUTH (password), HELLO and FLUSHALL are refused alike; the sequence's HELLO ... AUTH switch protocols.
        var helloRedis = await toRedis.CommandAsync(Args("HELLO", protocol));
        var helloGateway = await toGateway.CommandAsync(Args("HELLO", protocol));
        // The HELLO replies differ in the connection id by design; their type must not.
        Assert.Equal(helloRedis.Type, helloGateway.Type);
        Assert.Equal(Canonical(await toRedis.CommandAsync(Args("FLUSHALL"))), Canonical(await toGateway.CommandAsync(Args("FLUSHALL"))));

        var generator = new CommandGenerator(new Random(seed), DateTimeOffset.UtcNow.ToUnixTimeSeconds(), protocol, password ? Password : null);
        // What both were sent since the cache was last emptied: printed with a difference, since the state it found
        // is what explains it.
        var history = new List<string>();
        var batch = new List<GeneratedCommand>();
        for (var first = 0; first < commands; first += batch.Count)
        {
            batch.Clear();
            var size = pipelined ? generator.BatchSize() : 1;
            // A batch ends after INCRBYFLOAT: where its digits differ as documented, Redis is given Dcache's value
            // before the next command (see below).
            while (batch.Count < size && first + batch.Count < commands && (batch.Count == 0 || batch[^1].Kind != ReplyKind.Float))
            {
                batch.Add(generator.Next(first + batch.Count));
            }

            await RunBatchAsync(toRedis, toGateway, seed, first, protocol, batch, history, mismatches);
        }

        // A RESP2 connection left subscribed would refuse the next sequence's HELLO and FLUSHALL.
        var index = commands;
        foreach (var unsubscribe in generator.EndSubscriptions())
        {
            await RunBatchAsync(toRedis, toGateway, seed, index++, protocol, [unsubscribe], history, mismatches);
        }
    }

    private async Task RunBatchAsync(RespClient toRedis, RespClient toGateway, int seed, int first, string protocol, List<GeneratedCommand> batch, List<string> history, List<string> mismatches)
    {
        var toRedisBatch = new List<GeneratedCommand>();
        foreach (var command in batch)
        {
            if (command.Kind is ReplyKind.CountsKeys or ReplyKind.Scan)
            {
                // Redis 7.0 counts a key whose time has passed in DBSIZE until something looks it up or its active
                // expiry cycle reclaims it (SET ... EXAT <past> stores such a key), and SCAN ... TYPE none returns
                // it (its type check reclaims the key, then finds type "none"); Dcache has no such key. Looking
                // every key up first makes Redis reclaim them, so what is compared is the live keys.
                toRedisBatch.Add(new([Encoding.ASCII.GetBytes("EXISTS"), .. CommandGenerator.KeySpace]));
            }

            toRedisBatch.Add(command);
        }

        var redisReplies = await toRedis.PipelineAsync(toRedisBatch);
        var gatewayReplies = await toGateway.PipelineAsync(batch);
        var redisReply = 0;
        for (var j = 0; j < batch.Count; j++)
        {
            if (batch[j].Kind is ReplyKind.CountsKeys or ReplyKind.Scan)
            {
                redisReply++; // the EXISTS that went before
            }

            var mismatchesBefore = mismatches.Count;
            await CompareAsync(toRedis, toGateway, seed, first + j, protocol, batch[j], redisReplies[redisReply++], gatewayReplies[j], history, mismatches);
            if (mismatches.Count > mismatchesBefore)
            {
                break; // both caches were emptied: the rest of the batch ran on the state that differed
            }
        }
    }

    private async Task CompareAsync(RespClient toRedis, RespClient toGateway, int seed, int i, string protocol, GeneratedCommand command, RespValue expected, RespValue actual, List<string> history, List<string> mismatches)
    {
        history.Add($"#{i} {command.Show()} -> {Canonical(expected)}");
        if (command.Kind == ReplyKind.Float && expected.Type == '$' && actual.Type == '$' && CloseFloats(expected, actual, command.Arguments[2]))
        {
            // differs: INCRBYFLOAT in Redis adds 80-bit long doubles and prints 17 digits after the point, so a sum
            // with more significant digits than a long double holds shows its binary rounding error (200.5 + 0.1
            // is 200.60000000000000001, 1000 - 0.01 is 999.98999999999999999) where Dcache's decimal sum is
            // exact (200.6, 999.99); see docs/protocol.md, INCRBYFLOAT, and the report. The same number to 15
            // digits is accepted, and Redis is given Dcache's value so the two go on from the same state.
            await toRedis.CommandAsync([Encoding.ASCII.GetBytes("SET"), command.Arguments[1], actual.Bytes!, Encoding.ASCII.GetBytes("KEEPTTL")]);
            return;
        }

        if (command.Kind == ReplyKind.Float && expected.Type == '$' && actual.Text == "ERR increment would produce NaN or Infinity"
            && double.TryParse(expected.Text, NumberStyles.Float, CultureInfo.InvariantCulture, out var huge) && !double.IsFinite(huge))
        {
            // differs: a sum beyond a double's ±1.8e308 (values grown by APPEND reach it) is finite in Redis's long
            // double and an error here; documented in docs/protocol.md, INCRBYFLOAT. Redis is given Dcache's value.
            var unchanged = await toGateway.CommandAsync([Encoding.ASCII.GetBytes("GET"), command.Arguments[1]]);
            await toRedis.CommandAsync([Encoding.ASCII.GetBytes("SET"), command.Arguments[1], unchanged.Bytes!, Encoding.ASCII.GetBytes("KEEPTTL")]);
            return;
        }

        if (command.Kind == ReplyKind.Float && expected.Text == "ERR value is not a valid float" && actual.Text != expected.Text
            && (await toRedis.CommandAsync([Encoding.ASCII.GetBytes("GET"), command.Arguments[1]])).Bytes is { } stored && ReadOnlyAsEarlierBuildsRead(stored))
        {
            // differs: Redis refuses a stored number with trailing NULs ("7\0") or beyond a long double's range
            // ("1e-5000"); replicas read stored values as every earlier build does, so that a cluster being upgraded
            // applies INCRBYFLOAT alike on every replica (docs/protocol.md, INCRBYFLOAT). Redis is given Dcache's value.
            var now = await toGateway.CommandAsync([Encoding.ASCII.GetBytes("GET"), command.Arguments[1]]);
            await toRedis.CommandAsync([Encoding.ASCII.GetBytes("SET"), command.Arguments[1], now.Bytes!, Encoding.ASCII.GetBytes("KEEPTTL")]);
            return;
        }

        var expectedText = command.Compare(expected);
        var actualText = command.Compare(actual);
        if (!command.Agree(expected, actual))
        {
            mismatches.Add($"seed {seed} #{i} (RESP{protocol}): {command.Show()}{Environment.NewLine}    redis:  {expectedText}{Environment.NewLine}    dcache: {actualText}");
            output.WriteLine($"----- seed {seed} #{i}: the replies differ; the commands since the cache was last empty, with Redis's replies:");
            output.WriteLine(string.Join(Environment.NewLine, history.TakeLast(200)));
            output.WriteLine("----- each key now (GET, PTTL), where the two differ:");
            foreach (var key in CommandGenerator.KeySpace)
            {
                var redisState = $"{Canonical(await toRedis.CommandAsync([Encoding.ASCII.GetBytes("GET"), key]))} {Canonical(await toRedis.CommandAsync([Encoding.ASCII.GetBytes("PTTL"), key]))}";
                var dcacheState = $"{Canonical(await toGateway.CommandAsync([Encoding.ASCII.GetBytes("GET"), key]))} {Canonical(await toGateway.CommandAsync([Encoding.ASCII.GetBytes("PTTL"), key]))}";
                if (redisState != dcacheState)
                {
                    output.WriteLine($"{Quote(key)}: redis {redisState}, dcache {dcacheState}");
                }
            }

            history.Clear();
            // Start over from an empty cache, so that one difference is reported once rather than in every later
            // reply that depends on it.
            await toRedis.CommandAsync(Args("FLUSHALL"));
            await toGateway.CommandAsync(Args("FLUSHALL"));
        }
    }

    /// <summary>
    /// The same sum to 15 significant digits of the larger of the result and the increment (a sum that cancels, as
    /// 99999999999999999999 - 1e20, keeps only the operands' rounding errors: 0 in a long double, -1 in decimal).
    /// </summary>
    /// <summary>A number Redis's string2ld refuses but a double parser reads: trailing NULs, or a non-zero mantissa beyond a long double's exponent range.</summary>
    private static bool ReadOnlyAsEarlierBuildsRead(byte[] stored)
    {
        var text = Encoding.Latin1.GetString(stored);
        var number = text.TrimEnd('\0');
        if (number.Length < text.Length)
        {
            return number.Length > 0 && double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out _);
        }

        var e = text.IndexOfAny(['e', 'E']);
        return e > 0 && text[..e].Any(c => c is >= '1' and <= '9')
            && double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && (value == 0 || double.IsInfinity(value));
    }

    private static bool CloseFloats(RespValue redis, RespValue dcache, byte[] increment) =>
        double.TryParse(redis.Text, NumberStyles.Float, CultureInfo.InvariantCulture, out var a)
        && double.TryParse(dcache.Text, NumberStyles.Float, CultureInfo.InvariantCulture, out var b)
        && double.TryParse(Encoding.ASCII.GetString(increment), NumberStyles.Float, CultureInfo.InvariantCulture, out var c)
        && Math.Abs(a - b) <= Math.Max(Math.Max(Math.Abs(a), Math.Abs(c)), 1) * 1e-15;

    private static byte[][] Args(params string[] arguments) => arguments.Select(Encoding.UTF8.GetBytes).ToArray();

    private static string Show(byte[][] arguments) =>
        arguments.Length <= 20 ? string.Join(" ", arguments.Select(Quote)) : $"{string.Join(" ", arguments.Take(20).Select(Quote))} ... ({arguments.Length} arguments)";

    private static string Quote(byte[] bytes)
    {
        var text = new StringBuilder("\"");
        foreach (var b in bytes)
        {
            text.Append(b is >= 0x20 and < 0x7f and not (byte)'"' and not (byte)'\\' ? ((char)b).ToString() : $"\\x{b:x2}");
        }

        return text.Append('"').ToString();
    }

    /// <summary>Type and exact bytes, nested; an unordered reply (KEYS) sorted first.</summary>
    internal static string Canonical(RespValue value, bool unordered = false) => value.Type switch
    {
        '+' or '-' or '$' or '=' when value.Bytes is not null => value.Type + Quote(value.Bytes),
        ':' => ":" + value.Integer.ToString(CultureInfo.InvariantCulture),
        '_' or '$' or '*' when value.Items is null => value.Type + "nil",
        _ => value.Type + "[" + string.Join(", ", unordered ? value.Items!.Select(i => Canonical(i)).Order(StringComparer.Ordinal) : value.Items!.Select(i => Canonical(i))) + "]",
    };

    /// <summary>
    /// One command to send to both servers, and how to compare its replies. <see cref="InlineLine"/>, when set, is how it
    /// is sent (an inline command, as telnet sends it); <see cref="Replies"/> is how many replies it gets (SUBSCRIBE a b
    /// gets two), compared as one array of them.
    /// </summary>
    private sealed record GeneratedCommand(byte[][] Arguments, ReplyKind Kind = ReplyKind.Exact)
    {
        public int Replies { get; init; } = 1;

        public byte[]? InlineLine { get; init; }

        public string Show() => InlineLine is null ? RedisDifferentialTests.Show(Arguments) : $"(inline) {Quote(InlineLine)}";

        public string Compare(RespValue value) => Kind switch
        {
            ReplyKind.Unordered => Canonical(value, unordered: true),
            // The cursor, then the keys as a set.
            ReplyKind.Scan when value is { Type: '*', Items: [var cursor, var keys] } => $"*[{Canonical(cursor)}, {Canonical(keys, unordered: true)}]",
            ReplyKind.UnorderedPairs when value is { Type: '*' or '%', Items: { } items } =>
                value.Type + "[" + string.Join(", ", items.Chunk(2).Select(pair => string.Join(": ", pair.Select(item => Canonical(item)))).Order(StringComparer.Ordinal)) + "]",
            // The connection id differs by design; everything else of HELLO's reply must not.
            ReplyKind.Hello when value is { Type: '*' or '%', Items: { } items } =>
                value.Type + "[" + string.Join(", ", items.Select((item, j) => j > 0 && items[j - 1].Text == "id" && item.Type == ':' ? ":id" : Canonical(item))) + "]",
            _ => Canonical(value),
        };

        public bool Agree(RespValue redis, RespValue dcache)
        {
            if (Kind is ReplyKind.Seconds or ReplyKind.Milliseconds && redis.Type == ':' && dcache.Type == ':' && redis.Integer >= 0 && dcache.Integer >= 0)
            {
                // Relative expiries start from each server's clock at the moment it took the command; every expiry
                // the generator makes is at least 1,000 s from any other, so a few seconds of tolerance hide nothing.
                var tolerance = Kind == ReplyKind.Seconds ? 5 : 5_000;
                return Math.Abs(redis.Integer - dcache.Integer) <= tolerance;
            }

            return Compare(redis) == Compare(dcache);
        }
    }

    private enum ReplyKind
    {
        Exact,
        /// <summary>A time in seconds (TTL, EXPIRETIME): equal within a tolerance when both are times, exact otherwise.</summary>
        Seconds,
        Milliseconds,
        /// <summary>KEYS: the order of the keys is not part of the contract (docs/protocol.md).</summary>
        Unordered,
        /// <summary>
        /// SCAN from cursor 0: with at most 8 keys and a COUNT of at least 10 both servers finish the iteration in one
        /// call (cursor 0); the order of the keys is not part of the contract.
        /// </summary>
        Scan,
        /// <summary>DBSIZE: compared once Redis has reclaimed keys whose time has passed.</summary>
        CountsKeys,
        /// <summary>INCRBYFLOAT: see the long double difference where it is compared.</summary>
        Float,
        /// <summary>CONFIG GET: name-value pairs in the order of Redis's hash table, which is the process's own.</summary>
        UnorderedPairs,
        /// <summary>HELLO: the connection id is each server's own.</summary>
        Hello,
    }

    /// <summary>
    /// Random commands over a small key space with values chosen to hit parsing and overflow edges. Every expiry in
    /// the future is one of a few targets far apart, plus 1,000 s per command index, so any two differ by at least
    /// 1,000 s and NX/XX/GT/LT decide the same way on both servers however long each took to get the command; times in
    /// the past delete the key on both. Options come in any case and now and then with a NUL byte and more after them
    /// (Redis reads options as C strings); some commands are sent inline. The connection commands are generated where
    /// their replies are the same on both by design: not CLIENT ID, INFO, CLIENT INFO or COMMAND's table (each server's
    /// own), not READONLY/READWRITE (the gateway has them, a Redis without cluster support refuses them: docs/protocol.md),
    /// not CLIENT SETINFO (Redis 7.2's, which the gateway has and 7.0 has not), not PUT (the gateway's alias of SET),
    /// and HELLO only with the sequence's protocol.
    /// </summary>
    private sealed class CommandGenerator(Random random, long startUnixSeconds, string protocol, string? password)
    {
        public static readonly byte[][] KeySpace =
        [
            B("k0"), B("k1"), B("k2"), B("k3"), B("num"), B("flt"), B(""), [(byte)'b', 0, 0xff, (byte)'\n'],
        ];

        private static readonly string[] Integers =
        [
            "0", "1", "-1", "2", "10", "-10", "42", "1000", "-1000", "9223372036854775807", "-9223372036854775808",
            "9223372036854775806", "-9223372036854775807", "4611686018427387904", "9223372036854775808", "-9223372036854775809",
            "18446744073709551616", "99999999999999999999", "007", "+5", "-0", " 1", "1 ", "1.5", "1e3", "abc", "", "1_000",
        ];

        // No hexadecimal floats (0x1p3, 0x10), here or among the integers that become values: Redis's strtold reads
        // them, Dcache refuses them on purpose. Nor numbers beyond a double's ±1.8e308 (1e400), which Redis's long
        // doubles hold and Dcache's doubles do not. Both documented in docs/protocol.md, INCRBYFLOAT.
        private static readonly string[] Floats =
        [
            "0", "0.1", "-0.1", "1.5", "-2.25", "3.0", "10.50", "1e3", "5.0e3", "-1E-2", ".5", "5.", "2e2", "1e20", "-1e20",
            "123456789.123", "0.000001", "1e-5", "inf", "-inf", "nan", "abc", "", " 1", "1 ", "+1.5", "1.2.3", "1e", "1e5000", "1e-5000", "1e-400",
        ];

        private static readonly string[] Ranges =
        [
            "0", "1", "2", "-1", "-2", "3", "5", "-5", "10", "-100", "100", "9223372036854775807", "-9223372036854775808",
            "abc", "1.0", "",
        ];

        // Times that are refused, overflow, or lie in the past. No small positive ones: as a relative time (1 ms, 1 s)
        // the key would expire while the two servers take the next commands, each at its own moment.
        private static readonly string[] BadTimes =
        [
            "0", "-1", "-100", "9223372036854775807", "-9223372036854775808", "9223372036854775", "-9223372036854775",
            "1.5", "abc", "", "10 ",
        ];

        private static readonly string[] SetOptions = ["NX", "XX", "GET", "KEEPTTL", "EX", "PX", "EXAT", "PXAT", "PERSIST", "bogus"];

        private static readonly string[] GetExOptions = ["EX", "PX", "EXAT", "PXAT", "PERSIST", "KEEPTTL", "GET", "bogus"];

        private static readonly string[] ExpireOptions = ["NX", "XX", "GT", "LT", "bogus"];

        // Redis's glob edges too: an unclosed class, an empty one, a reversed range, escapes at the end, a NUL byte.
        private static readonly string[] Patterns =
        [
            "*", "k*", "k?", "*1", "[a-k]*", "[^k]*", "\\k*", "nomatch", "", "b*", "f[l]t", "[", "[]", "[^]", "k\\", "[k-a]?", "[]k]*",
            "[\\]]*", "*?*", "**", "[n-]*", "b\0*", "?\0\xff*", "[!k]*", "K*",
        ];

        private static readonly string[] ScanCounts = ["10", "100", "1000", "0", "-1", "x", "9223372036854775807", "9223372036854775808", "+10", "1e3", ""];

        // Every one reads as cursor 0 (a later cursor is a position in each server's own order: docs/protocol.md, SCAN) or
        // is invalid.
        private static readonly string[] ScanCursors = ["abc", "", "1.5", " 0", "00", "-0", "+0", "0\0x", "18446744073709551616", "0 "];

        private static readonly string[] SelectIndexes = ["0", "1", "-1", "abc", "2147483648", "-2147483649", "00", "+0", "0\0", " 0", "9223372036854775808", ""];

        private static readonly string[] ClientNames = ["app", "", "a b", "a\nb", "h\xe9", "x\0y", "-_.:!~"];

        // Exact names and aliases in any case, and names neither server has: a pattern would match the many
        // parameters of Redis the gateway does not have. No name with a NUL byte: Redis looks names up as it looks up
        // commands (see Spelled).
        private static readonly string[] ConfigNames =
        [
            "appendonly", "client-query-buffer-limit", "cluster-enabled", "databases", "maxclients", "proto-max-bulk-len",
            "replica-read-only", "slave-read-only", "save", "timeout", "Databases", "TIMEOUT", "nosuch", "",
        ];

        // Patterns that match the same commands in both (Redis has more: get* would list getbit).
        private static readonly string[] CommandPatterns =
        [
            "getd*", "*expire*", "incrby*", "*ttl", "flush*", "config|get", "CLIENT|GETNAME", "nosuch*", "rename*", "[gs]etex", "getd*\0x",
        ];

        private static readonly int[] ManyKeys = [4095, 4096, 4097, 9000];

        private readonly HashSet<string> _channels = new(StringComparer.Ordinal);

        // Whether the connection has authenticated: without a password it starts so; before it, SUBSCRIBE would get
        // one NOAUTH instead of a confirmation per name.
        private bool _authenticated = password is null;
        private readonly HashSet<string> _patterns = new(StringComparer.Ordinal);

        private int _index;

        /// <summary>How many commands the next pipelined batch holds (the gateway starts up to 1,024 at once).</summary>
        public int BatchSize() => random.Next(1, 17);

        public GeneratedCommand Next(int index)
        {
            _index = index;
            var command = NextCommand();
            while (!_authenticated && command.Arguments.Length > 10)
            {
                // Before AUTH both servers answer a request of more than 10 arguments with a protocol error and close
                // the connection (Gateway.Tests covers that); the sequence goes on on its connection.
                command = NextCommand();
            }

            // Not a line near the 64 KiB both servers allow an inline command (a request of thousands of keys).
            return random.Next(20) == 0 && Inline(command.Arguments) is { Length: < 16_384 } line ? command with { InlineLine = line } : command;
        }

        private GeneratedCommand NextCommand()
        {
            if (_channels.Count + _patterns.Count > 0 && random.Next(3) == 0)
            {
                return Unsubscribe(all: false);
            }

            if (password is not null && random.Next(_authenticated ? 40 : 15) == 0)
            {
                return Auth(password);
            }

            var roll = random.Next(100);
            return roll switch
            {
                < 5 => new(A("GET", Key())),
                < 14 => Set(),
                < 16 => new(A("SETEX", Key(), random.Next(4) == 0 ? BadTime(absolute: false) : FutureSeconds(), Value())),
                < 18 => new(A("PSETEX", Key(), random.Next(4) == 0 ? BadTime(absolute: false) : FutureMilliseconds(), Value())),
                < 20 => new(A("SETNX", Key(), Value())),
                < 22 => new(A("GETSET", Key(), Value())),
                < 25 => new(Prefixed(random.Next(2) == 0 ? "DEL" : "UNLINK", Keys(1, 3))),
                < 27 => new(Prefixed("EXISTS", Keys(1, 4))),
                < 29 => new(Prefixed("MGET", Keys(1, 4))),
                < 31 => new(Pairs(random.Next(2) == 0 ? "MSET" : "MSETNX")),
                < 35 => new(A(random.Next(2) == 0 ? "INCR" : "DECR", NumericKey())),
                < 39 => new(A(random.Next(2) == 0 ? "INCRBY" : "DECRBY", NumericKey(), B(Pick(Integers)))),
                < 43 => new(A("INCRBYFLOAT", NumericKey(), B(Pick(Floats))), ReplyKind.Float),
                < 46 => new(A("APPEND", Key(), Value())),
                < 48 => new(A("STRLEN", Key())),
                < 51 => new(A(random.Next(4) == 0 ? "SUBSTR" : "GETRANGE", Key(), B(Pick(Ranges)), B(Pick(Ranges)))),
                < 53 => new(A("GETDEL", Key())),
                < 58 => GetEx(),
                < 61 => new(A(random.Next(2) == 0 ? "RENAME" : "RENAMENX", Key(), Key())),
                < 62 => new(A("TYPE", Key())),
                < 64 => new(Prefixed("TOUCH", Keys(1, 3))),
                < 71 => Expire(),
                < 73 => new(A("PERSIST", Key())),
                < 78 => Pick(["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"]) is var name
                    ? new(A(name, Key()), name.StartsWith('P') ? ReplyKind.Milliseconds : ReplyKind.Seconds)
                    : throw new UnreachableException(),
                < 80 => new(A("DBSIZE"), ReplyKind.CountsKeys),
                < 82 => new(A("KEYS", B(Pick(Patterns))), ReplyKind.Unordered),
                < 83 => new(random.Next(4) == 0 ? A(Pick(["FLUSHDB", "FLUSHALL"]), Option(Pick(["ASYNC", "sync", "bogus"]))) : A(Pick(["FLUSHDB", "FLUSHALL"]))),
                < 85 => Scan(),
                < 89 => WrongArity(),
                < 91 => Unknown(),
                < 92 => _authenticated ? Subscribe() : new(A("SUBSCRIBE")),
                _ => Connection(),
            };
        }

        /// <summary>The commands that end every subscription left at the end of a sequence.</summary>
        public IEnumerable<GeneratedCommand> EndSubscriptions()
        {
            while (_channels.Count + _patterns.Count > 0)
            {
                yield return Unsubscribe(all: true);
            }
        }

        /// <summary>
        /// An option as a client may spell it: in any case, and now and then followed by a NUL byte and more (which
        /// Redis, reading options as C strings, does not see).
        /// </summary>
        private byte[] Option(string name) => random.Next(12) == 0 ? B(Spelled(name) + Pick(["\0", "\0junk", "\0\0x"])) : B(Spelled(name));

        /// <summary>
        /// A name in any case. Not followed by a NUL byte: Redis finds a (sub)command by a hash of all its bytes but
        /// compares names as C strings, so "GET\0x" is GET only when the two hash alike, by the luck of its random seed.
        /// </summary>
        private string Spelled(string name) => random.Next(4) switch
        {
            0 => name.ToLowerInvariant(),
            1 => string.Concat(name.Select(c => random.Next(2) == 0 ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c))),
            _ => name,
        };

        /// <summary>
        /// A command as an inline line, as redis-cli's quoting (sdssplitargs) reads it: plain words where that is safe,
        /// otherwise double quotes with escapes, or single quotes; ending in CRLF or LF.
        /// </summary>
        private byte[] Inline(byte[][] arguments)
        {
            var line = new List<byte>();
            foreach (var argument in arguments)
            {
                if (line.Count > 0)
                {
                    line.AddRange(random.Next(4) == 0 ? "  "u8.ToArray() : " "u8.ToArray());
                }

                var plain = argument.Length > 0 && argument.All(b => char.IsAsciiLetterOrDigit((char)b) || "-_.:*?[]^!@#$%&+=/<>{}|~,;".Contains((char)b, StringComparison.Ordinal));
                var singleQuotable = !argument.Any(b => b is 0 or (byte)'\r' or (byte)'\n' or (byte)'\\');
                if (plain && random.Next(4) != 0)
                {
                    line.AddRange(argument);
                }
                else if (singleQuotable && random.Next(3) == 0)
                {
                    line.Add((byte)'\'');
                    foreach (var b in argument)
                    {
                        line.AddRange(b == (byte)'\'' ? "\\'"u8.ToArray() : [b]);
                    }

                    line.Add((byte)'\'');
                }
                else
                {
                    line.Add((byte)'"');
                    foreach (var b in argument)
                    {
                        line.AddRange(b switch
                        {
                            (byte)'"' => "\\\""u8.ToArray(),
                            (byte)'\\' => "\\\\"u8.ToArray(),
                            (byte)'\n' when random.Next(2) == 0 => "\\n"u8.ToArray(),
                            >= 0x20 and < 0x7f => [b],
                            _ => Encoding.ASCII.GetBytes($"\\x{b:x2}"),
                        });
                    }

                    line.Add((byte)'"');
                }
            }

            line.AddRange(random.Next(4) == 0 ? "\n"u8.ToArray() : "\r\n"u8.ToArray());
            return [.. line];
        }

        private GeneratedCommand Set()
        {
            var arguments = new List<byte[]> { B("SET"), Key(), Value() };
            var options = random.Next(5);
            for (var i = 0; i < options; i++)
            {
                var option = Pick(SetOptions);
                arguments.Add(Option(option));
                if (option is "EX" or "PX" or "EXAT" or "PXAT" && random.Next(10) != 0) // sometimes the value is missing
                {
                    arguments.Add(ExpiryValue(option));
                }
            }

            return new([.. arguments]);
        }

        private GeneratedCommand Scan()
        {
            // Cursor 0 only: a later cursor is a position in each server's own order (docs/protocol.md, SCAN).
            var arguments = new List<byte[]> { B("SCAN"), B(random.Next(10) == 0 ? Pick(ScanCursors) : "0") };
            var options = random.Next(4);
            for (var i = 0; i < options; i++)
            {
                var option = Pick(["MATCH", "COUNT", "TYPE", "BOGUS"]);
                arguments.Add(Option(option));
                if (random.Next(10) != 0)
                {
                    arguments.Add(option switch
                    {
                        "MATCH" => B(Pick(Patterns)),
                        "COUNT" => B(Pick(ScanCounts)),
                        "TYPE" => Option(Pick(["string", "hash", "list", "none", "zset", "nosuchtype"])),
                        _ => B("x"),
                    });
                }
            }

            return new([.. arguments], ReplyKind.Scan);
        }

        private GeneratedCommand GetEx()
        {
            var arguments = new List<byte[]> { B("GETEX"), Key() };
            var options = random.Next(4);
            for (var i = 0; i < options; i++)
            {
                var option = Pick(GetExOptions);
                arguments.Add(Option(option));
                if (option is "EX" or "PX" or "EXAT" or "PXAT" && random.Next(10) != 0)
                {
                    arguments.Add(ExpiryValue(option));
                }
            }

            return new([.. arguments]);
        }

        private GeneratedCommand Expire()
        {
            var name = Pick(["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"]);
            var time = random.Next(5) == 0 ? BadTime(absolute: name.EndsWith("AT", StringComparison.Ordinal))
                : name switch
                {
                    "EXPIRE" => FutureSeconds(),
                    "PEXPIRE" => FutureMilliseconds(),
                    "EXPIREAT" => B(AbsoluteSeconds()),
                    _ => B(AbsoluteMilliseconds()),
                };
            var arguments = new List<byte[]> { B(name), Key(), time };
            var options = random.Next(4);
            for (var i = 0; i < options; i++)
            {
                arguments.Add(Option(Pick(ExpireOptions)));
            }

            return new([.. arguments]);
        }

        /// <summary>
        /// SUBSCRIBE or PSUBSCRIBE to a few names: a RESP2 connection then refuses all but (un)subscribing and PING until
        /// it has no subscriptions; RESP3 takes anything. Each name gets its confirmation.
        /// </summary>
        private GeneratedCommand Subscribe()
        {
            var pattern = random.Next(3) == 0;
            var names = new string[random.Next(1, 4)];
            for (var i = 0; i < names.Length; i++)
            {
                names[i] = pattern ? Pick(["p*", "q?", "[ab]"]) : Pick(["a", "b", "c", ""]);
                (pattern ? _patterns : _channels).Add(names[i]);
            }

            return new(Prefixed(pattern ? "PSUBSCRIBE" : "SUBSCRIBE", [.. names.Select(B)])) { Replies = names.Length };
        }

        /// <summary>
        /// (P)UNSUBSCRIBE some names, or all of them. Without names only while at most one is left: Redis confirms them in
        /// its hash table's order, the gateway in sorted order, and each confirmation carries the count left.
        /// </summary>
        private GeneratedCommand Unsubscribe(bool all)
        {
            var pattern = _patterns.Count > 0 && (_channels.Count == 0 || random.Next(2) == 0);
            var names = pattern ? _patterns : _channels;
            var name = pattern ? "PUNSUBSCRIBE" : "UNSUBSCRIBE";
            if (names.Count <= 1 && random.Next(2) == 0)
            {
                var replies = Math.Max(1, names.Count);
                names.Clear();
                return new(A(name)) { Replies = replies };
            }

            var chosen = all ? names.Order(StringComparer.Ordinal).ToList() : names.Where(_ => random.Next(2) == 0).Append(Pick(["zz", "a", "p*"])).ToList();
            foreach (var each in chosen)
            {
                names.Remove(each);
            }

            return new(Prefixed(name, [.. chosen.Select(B)])) { Replies = chosen.Count };
        }

        /// <summary>The connection and server commands the gateway answers itself, where Redis answers the same (see the class).</summary>
        private GeneratedCommand Connection() => random.Next(13) switch
        {
            0 => new(random.Next(3) == 0 ? A("PING") : random.Next(4) == 0 ? A("PING", Value(), Value()) : A("PING", Value())),
            1 => new(random.Next(5) == 0 ? A("ECHO") : A("ECHO", Value())),
            2 => new(random.Next(6) == 0 ? A("SELECT") : A("SELECT", B(Pick(SelectIndexes)))),
            3 => new(random.Next(2) == 0 ? A("CLIENT", B(Spelled("SETNAME")), B(Pick(ClientNames))) : A("CLIENT", B(Spelled("GETNAME")))),
            4 => new(Pick<byte[][]>(
            [
                // CLIENT LIST where no client matches (any other would show each server's own clients).
                A("CLIENT", B("LIST"), Option("TYPE"), Option(Pick(["master", "replica", "slave", "bogus", "bo\0gus"]))),
                A("CLIENT", B("LIST"), Option("ID"), B(Pick(["0", "-5", "abc", "9223372036854775807", "1.5"])), B(Pick(["-1", "x"]))),
                A("CLIENT", B("LIST"), B("ID")),
                A("CLIENT", B("LIST"), B("TYPE"), B("normal"), B("ID"), B("1")),
                A("CLIENT", B("LIST"), B("BOGUS")),
                A("CLIENT", B("LIST"), B("TYPE")),
            ])),
            5 => new(Pick<byte[][]>(
            [
                A("CLIENT"), A("CLIENT", B("NOSUCH")), A("CLIENT", B("GETNAME"), B("x")), A("CLIENT", B("ID"), B("x")),
                A("CLIENT", B("SETNAME")), A("CLIENT", B("INFO"), B("x")),
            ])),
            6 => new(Prefixed("CONFIG", [B(Spelled("GET")), .. Enumerable.Range(0, random.Next(1, 4)).Select(_ => B(Pick(ConfigNames)))]), ReplyKind.UnorderedPairs),
            7 => new(Pick<byte[][]>(
            [
                A("CONFIG", B("SET"), B(Pick(["nosuch", "no\0such", "bogus-parameter"])), B("1")),
                A("CONFIG", B("RESETSTAT")), A("CONFIG", B("REWRITE")), A("CONFIG", B("BOGUS")), A("CONFIG"), A("CONFIG", B("GET")),
                A("CONFIG", B("RESETSTAT"), B("x")), A("CONFIG", B("SET"), B("x")),
            ])),
            8 => new(Pick<byte[][]>(
            [
                A("COMMAND", B("COUNT"), B("x")), A("COMMAND", B("BOGUS")), A("COMMAND", B("INFO"), B("nosuch"), B("get|x"), B("client|nope")),
                A("COMMAND", B("LIST"), Option("FILTERBY"), Option("MODULE"), B("x")), A("COMMAND", B("LIST"), B("FILTERBY"), B("COLOR"), B("x")),
                A("COMMAND", B("LIST"), B("FILTERBY"), B("PATTERN")), A("COMMAND", B("LIST"), B("bogus")), A("COMMAND", B("DOCS"), B("nosuch")),
            ])),
            9 => new(A("COMMAND", B("LIST"), Option("FILTERBY"), Option("PATTERN"), B(Pick(CommandPatterns))), ReplyKind.Unordered),
            10 => new(Pick<byte[][]>(
            [
                A("AUTH"), A("AUTH", Value()), A("AUTH", B("default"), Value()), A("AUTH", B("bob"), B("x")), A("AUTH", B("a"), B("b"), B("c")),
                A("AUTH", B("default\0"), B("x")), A("CLUSTER"), A("CLUSTER", B(Spelled(Pick(["INFO", "NODES", "HELP", "bogus"])))),
                A("CLUSTER", B(Pick(["INFO", "KEYSLOT", "GETKEYSINSLOT", "SETSLOT"])), B("x")),
            ])),
            11 => Hello(),
            _ => new(A("EXISTS", Key())),
        };

        /// <summary>AUTH or HELLO ... AUTH against a password: right or wrong, the user "default" or another.</summary>
        private GeneratedCommand Auth(string password)
        {
            var right = random.Next(3) == 0;
            var attempt = B(right ? password : Pick(["wrong", "", password + "\0", password.ToUpperInvariant()]));
            var user = random.Next(4) == 0 ? Pick(["bob", "DEFAULT", "default\0"]) : "default";
            var (arguments, kind) = random.Next(4) switch
            {
                0 => (A("AUTH", attempt), ReplyKind.Exact),
                1 => (A("AUTH", B(user), attempt), ReplyKind.Exact),
                2 => (A("HELLO", B(protocol), Option("AUTH"), B(user), attempt), ReplyKind.Hello),
                _ => (A("HELLO", B(protocol), Option("AUTH"), B(user), attempt, Option("SETNAME"), B(Pick(ClientNames))), ReplyKind.Hello),
            };
            // Redis checks HELLO's credentials before its client name: a bad name still leaves the connection authenticated.
            _authenticated |= right && (arguments.Length == 2 || user == "default");
            return new(arguments, kind);
        }

        /// <summary>HELLO, failing in its ways, or succeeding with the sequence's protocol (the connection id masked).</summary>
        private GeneratedCommand Hello() => random.Next(3) == 0
            ? new(Pick<byte[][]>(
            [
                A("HELLO", B(Pick(["4", "1", "0", "-1", "abc", "2147483650", "", "3.0"]))),
                A("HELLO", B(protocol), Option(Pick(["BOGUS", "bo\0gus"]))),
                A("HELLO", B(protocol), Option("AUTH"), B("default")),
                A("HELLO", B(protocol), Option("AUTH"), B("bob"), B("x")),
                A("HELLO", B(protocol), Option("SETNAME")),
                A("HELLO", B(protocol), Option("SETNAME"), B(Pick(["a b", "x\ny"]))),
            ]))
            : new(Pick<byte[][]>(
            [
                A("HELLO"),
                A("HELLO", B(protocol)),
                A("HELLO", B(protocol), Option("SETNAME"), B(Pick(ClientNames))),
                A("HELLO", B(protocol), Option("AUTH"), B("default"), Value(), Option("SETNAME"), B("named")),
            ]), ReplyKind.Hello);

        private GeneratedCommand WrongArity()
        {
            // Each command with one argument too few or too many (for the variadic ones: none at all).
            (string Name, int Fixed)[] commands =
            [
                ("GET", 2), ("SET", -3), ("SETEX", 4), ("PSETEX", 4), ("SETNX", 3), ("GETSET", 3), ("DEL", -2), ("UNLINK", -2),
                ("EXISTS", -2), ("MGET", -2), ("MSET", -3), ("MSETNX", -3), ("INCR", 2), ("DECR", 2), ("INCRBY", 3),
                ("DECRBY", 3), ("INCRBYFLOAT", 3), ("APPEND", 3), ("STRLEN", 2), ("GETRANGE", 4), ("SUBSTR", 4),
                ("GETDEL", 2), ("GETEX", -2), ("RENAME", 3), ("RENAMENX", 3), ("TYPE", 2), ("TOUCH", -2), ("EXPIRE", -3),
                ("PEXPIRE", -3), ("EXPIREAT", -3), ("PEXPIREAT", -3), ("PERSIST", 2), ("TTL", 2), ("PTTL", 2),
                ("EXPIRETIME", 2), ("PEXPIRETIME", 2), ("DBSIZE", 1), ("KEYS", 2), ("SCAN", -2),
            ];
            var (name, arity) = commands[random.Next(commands.Length)];
            int count;
            if (arity > 0)
            {
                count = random.Next(2) == 0 && arity > 1 ? arity - 1 : arity + 1;
            }
            else
            {
                count = random.Next(1, -arity); // fewer than the minimum
            }

            // MSET and MSETNX with an even argument count past the minimum are refused by arity too (key without value).
            if (name is "MSET" or "MSETNX" && random.Next(2) == 0)
            {
                count = 4;
            }

            var arguments = new byte[count][];
            arguments[0] = B(random.Next(3) == 0 ? name.ToLowerInvariant() : name);
            for (var i = 1; i < count; i++)
            {
                arguments[i] = i == 1 ? Key() : Value();
            }

            return new(arguments);
        }

        private GeneratedCommand Unknown()
        {
            // Commands neither server has (SETRANGE, LCS, ... exist in Redis; docs/protocol.md lists them as missing,
            // so they are not generated here).
            // A name and arguments longer than the 128 bytes Redis quotes of each.
            var name = Pick(["NOSUCHCOMMAND", "foo", "GETT", "sett", "X", new string('Z', 140)]);
            var arguments = new List<byte[]> { B(name) };
            var count = random.Next(4);
            for (var i = 0; i < count; i++)
            {
                arguments.Add(random.Next(2) == 0 ? Key() : Value());
            }

            return new([.. arguments]);
        }

        private byte[] Key() => KeySpace[random.Next(KeySpace.Length)];

        private byte[] NumericKey() => random.Next(3) == 0 ? Key() : random.Next(2) == 0 ? B("num") : B("flt");

        /// <summary>
        /// A few keys, now and then thousands (the nodes read more than 4,096 keys of one MGET, EXISTS or TOUCH a slice
        /// at a time, as of one instant all the same).
        /// </summary>
        private byte[][] Keys(int min, int max)
        {
            var keys = new byte[random.Next(150) == 0 ? Pick(ManyKeys) : random.Next(min, max + 1)][];
            for (var i = 0; i < keys.Length; i++)
            {
                keys[i] = Key();
            }

            return keys;
        }

        private byte[][] Pairs(string name)
        {
            var arguments = new List<byte[]> { B(name) };
            var pairs = random.Next(150) == 0 ? Pick(ManyKeys) : random.Next(1, 4);
            for (var i = 0; i < pairs; i++)
            {
                arguments.Add(Key());
                arguments.Add(Value());
            }

            return [.. arguments];
        }

        private byte[] Value() => random.Next(6) switch
        {
            0 => B(Pick(Integers)),
            1 => B(Pick(Floats)),
            // Numbers followed by a NUL byte too: Redis reads every byte of a number, .NET's parsers stop at trailing NULs.
            2 => Pick<byte[]>([[], [0], [(byte)'a', 0, (byte)'b'], [0xff, 0xfe, 0x80], B("héllo"), B("with space"), B("line\r\nbreak"), B("7\0"), B("2.5\0"), B(new string('x', 150))]),
            _ => B("v" + random.Next(100).ToString(CultureInfo.InvariantCulture)),
        };

        private byte[] ExpiryValue(string option) => random.Next(4) == 0 ? BadTime(absolute: option.EndsWith("AT", StringComparison.Ordinal)) : option switch
        {
            "EX" => FutureSeconds(),
            "PX" => FutureMilliseconds(),
            "EXAT" => B(AbsoluteSeconds()),
            _ => B(AbsoluteMilliseconds()),
        };

        private byte[] BadTime(bool absolute) => absolute && random.Next(3) == 0 ? B(PastAbsolute()) : B(Pick(BadTimes));

        /// <summary>A relative expiry: one of four targets 10^7 s apart, plus 1,000 s per command index (see the class).</summary>
        private long FutureTargetSeconds() => ((random.Next(4) + 1) * 10_000_000L) + (_index * 1_000L);

        private byte[] FutureSeconds() => B(FutureTargetSeconds().ToString(CultureInfo.InvariantCulture));

        private byte[] FutureMilliseconds() => B((FutureTargetSeconds() * 1000).ToString(CultureInfo.InvariantCulture));

        private string AbsoluteSeconds() => random.Next(6) == 0 ? PastAbsolute() : (startUnixSeconds + FutureTargetSeconds()).ToString(CultureInfo.InvariantCulture);

        private string AbsoluteMilliseconds() =>
            random.Next(6) == 0 ? PastAbsolute()
            // Some milliseconds past the second, so EXPIRETIME's rounding shows.
            : (((startUnixSeconds + FutureTargetSeconds()) * 1000) + Pick([0, 1, 499, 500, 501, 999])).ToString(CultureInfo.InvariantCulture);

        private string PastAbsolute() => Pick(["1", "1000", (startUnixSeconds - 100_000).ToString(CultureInfo.InvariantCulture)]);

        private T Pick<T>(T[] items) => items[random.Next(items.Length)];

        private static byte[] B(string text) => Encoding.UTF8.GetBytes(text);

        private static byte[][] A(string name, params byte[][] arguments) => [B(name), .. arguments];

        private static byte[][] Prefixed(string name, byte[][] arguments) => [B(name), .. arguments];
    }

    /// <summary>
    /// A throwaway redis-server: no persistence, 127.0.0.1, a free port, its own temp directory; killed and the
    /// directory removed on dispose, also when the test failed.
    /// </summary>
    private sealed class RedisServer : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly string _directory;
        private readonly StringBuilder _log = new();

        private RedisServer(Process process, string directory, int port)
        {
            _process = process;
            _directory = directory;
            Port = port;
        }

        public int Port { get; }

        public static async Task<RedisServer> StartAsync(string? password = null)
        {
            var directory = Directory.CreateTempSubdirectory("dcache-redisdiff-").FullName;
            var port = FreePorts.Allocate(1)[0];
            var info = new ProcessStartInfo("redis-server")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
                WorkingDirectory = directory,
            };
            // One database, as the gateway has: SELECT and CONFIG GET databases answer alike.
            foreach (var argument in (string[])["--port", port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--databases", "1", "--dir", directory, "--daemonize", "no", "--protected-mode", "yes", "--logfile", ""])
            {
                info.ArgumentList.Add(argument);
            }

            if (password is not null)
            {
                info.ArgumentList.Add("--requirepass");
                info.ArgumentList.Add(password);
            }

            Process process;
            try
            {
                process = Process.Start(info) ?? throw new InvalidOperationException("redis-server did not start");
            }
            catch (Win32Exception ex)
            {
                Directory.Delete(directory, recursive: true);
                throw new InvalidOperationException(
                    "cannot start redis-server, which this test compares the gateway with; install Debian's redis-server package (test.sh does when it is missing)", ex);
            }

            var server = new RedisServer(process, directory, port);
            process.OutputDataReceived += (_, e) => server.Capture(e.Data);
            process.ErrorDataReceived += (_, e) => server.Capture(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            try
            {
                await Eventually.WaitAsync(async () =>
                {
                    if (process.HasExited)
                    {
                        throw new InvalidOperationException($"redis-server exited with code {process.ExitCode}: {server.Log}");
                    }

                    using var client = await RespClient.OpenAsync(port);
                    var pong = await client.CommandAsync(Args("PING"));
                    return pong.Text == "PONG" || (password is not null && pong.Text?.StartsWith("NOAUTH", StringComparison.Ordinal) == true);
                }, TimeSpan.FromSeconds(20), $"redis-server on port {port} to answer PING");
            }
            catch (Exception ex)
            {
                await server.DisposeAsync();
                throw new InvalidOperationException($"redis-server did not start: {ex.Message}; its output: {server.Log}", ex);
            }

            return server;
        }

        private string Log
        {
            get
            {
                lock (_log)
                {
                    return _log.ToString();
                }
            }
        }

        private void Capture(string? line)
        {
            if (line is not null)
            {
                lock (_log)
                {
                    _log.AppendLine(line);
                }
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
            try
            {
                Directory.Delete(_directory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>One RESP connection, one command at a time, binary-safe arguments.</summary>
    private sealed class RespClient : IDisposable
    {
        private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
        private readonly Socket _socket;
        private byte[] _buffer = new byte[16 * 1024];
        private int _filled;

        private RespClient(Socket socket) => _socket = socket;

        public static async Task<RespClient> OpenAsync(int port)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(IPAddress.Loopback, port);
                return new RespClient(socket);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        public async Task<RespValue> CommandAsync(byte[][] arguments) => (await PipelineAsync([new GeneratedCommand(arguments)]))[0];

        /// <summary>Sends the commands in one write, then reads their replies (a command with several, as one array of them).</summary>
        public async Task<List<RespValue>> PipelineAsync(IReadOnlyList<GeneratedCommand> commands)
        {
            using var deadline = new CancellationTokenSource(Timeout);
            await _socket.SendAsync(commands.SelectMany(command => command.InlineLine ?? Encode(command.Arguments)).ToArray(), SocketFlags.None, deadline.Token);
            var replies = new List<RespValue>(commands.Count);
            foreach (var command in commands)
            {
                if (command.Replies == 1)
                {
                    replies.Add(await ReadAsync(command, deadline.Token));
                    continue;
                }

                var parts = new List<RespValue>(command.Replies);
                while (parts.Count < command.Replies)
                {
                    parts.Add(await ReadAsync(command, deadline.Token));
                }

                replies.Add(new RespValue('*', Items: parts));
            }

            return replies;
        }

        /// <summary>Whether the server closed the connection (and sent nothing more) within the timeout.</summary>
        public async Task<bool> IsClosedAsync()
        {
            using var deadline = new CancellationTokenSource(Timeout);
            return _filled == 0 && await _socket.ReceiveAsync(_buffer, SocketFlags.None, deadline.Token) == 0;
        }

        private async Task<RespValue> ReadAsync(GeneratedCommand command, CancellationToken cancellationToken)
        {
            while (true)
            {
                var unread = new ReadOnlySequence<byte>(_buffer, 0, _filled);
                if (RespValue.TryRead(ref unread, out var reply))
                {
                    var consumed = _filled - (int)unread.Length;
                    Buffer.BlockCopy(_buffer, consumed, _buffer, 0, _filled - consumed);
                    _filled -= consumed;
                    return reply!;
                }

                if (_filled == _buffer.Length)
                {
                    Array.Resize(ref _buffer, _buffer.Length * 2);
                }

                var read = await _socket.ReceiveAsync(_buffer.AsMemory(_filled), SocketFlags.None, cancellationToken);
                if (read == 0)
                {
                    throw new IOException($"the server closed the connection after {command.Show()}");
                }

                _filled += read;
            }
        }

        private static byte[] Encode(byte[][] arguments)
        {
            var frame = new MemoryStream();
            frame.Write(Encoding.ASCII.GetBytes($"*{arguments.Length}\r\n"));
            foreach (var argument in arguments)
            {
                frame.Write(Encoding.ASCII.GetBytes($"${argument.Length}\r\n"));
                frame.Write(argument);
                frame.Write("\r\n"u8);
            }

            return frame.ToArray();
        }

        public void Dispose() => _socket.Dispose();
    }
}
