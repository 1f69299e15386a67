using System.Globalization;
using System.Text;
using Dcache.Gateway.Tests.Support;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Dcache.Gateway.Tests;

/// <summary>
/// Random and mutated RESP frames against the real handler. Whatever arrives, a connection answers with replies or
/// errors or is closed; the handler never fails unexpectedly (no error-level log), buffering stays bounded, and a
/// well-behaved client keeps working throughout, and closed connections leave nothing behind. Replay a failure with
/// DCACHE_FUZZ_SEED=&lt;seed&gt;.
/// </summary>
/// <remarks>
/// The heap is measured process-wide, so the test runs alone; and it is measured after a full collection, because
/// uncollected garbage depends on when the GC last ran (CI once saw 263 MiB of it where a replay of the same seed saw 46).
/// </remarks>
[Collection(FuzzCollection.Name)]
public sealed class FuzzTests(ITestOutputHelper output)
{
    private const int Frames = 12_000;

    private static readonly string[][] ValidCommands =
    [
        ["GET", "k"], ["SET", "k", "v"], ["SET", "k", "v", "EX", "10", "NX", "GET"], ["DEL", "a", "b"], ["EXISTS", "k"],
        ["MGET", "a", "b", "c"], ["MSET", "a", "1", "b", "2"], ["INCR", "n"], ["DECRBY", "n", "5"], ["EXPIRE", "k", "10", "XX", "LT"],
        ["TTL", "k"], ["PTTL", "k"], ["PERSIST", "k"], ["DBSIZE"], ["PING"], ["ECHO", "hi"], ["HELLO", "3"], ["HELLO", "2"],
        ["CLIENT", "SETNAME", "fuzz"], ["CLIENT", "INFO"], ["CONFIG", "GET", "*"], ["COMMAND", "COUNT"], ["INFO"], ["SELECT", "0"],
        ["READONLY"], ["READWRITE"], ["SUBSCRIBE", "c"], ["UNSUBSCRIBE"], ["AUTH", "p"], ["CLUSTER", "NODES"], ["UNLINK", "k"],
        ["PUT", "k", "v"], ["PEXPIRE", "k", "100"], ["INCRBY", "n", "x"], ["SET", "k", "v", "PX", "-1"], ["NOSUCH", "a"],
    ];

    [Fact]
    public async Task RandomAndMutatedFramesGetRepliesOrACloseAndNeverBreakTheGateway()
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_FUZZ_SEED") is { Length: > 0 } text
            ? int.Parse(text, CultureInfo.InvariantCulture)
            : Random.Shared.Next();
        output.WriteLine($"fuzz seed {seed} (replay: DCACHE_FUZZ_SEED={seed} dotnet test tests/Gateway.Tests --filter FuzzTests)");
        var random = new Random(seed);
        var server = new TestServer(o =>
        {
            o.MaxBulkLength = 64 * 1024;
            o.MaxRequestBytes = 8 * 1024 * 1024;
            o.MaxInlineLength = 4096;
            o.MaxOutputBufferBytes = 4 * 1024 * 1024;
        });
        server.Cluster.RecordExecuted = false;
        server.Log.MinimumKept = LogLevel.Warning;
        await using var wellBehaved = server.Connect();
        GC.Collect();
        var baseline = GC.GetTotalMemory(forceFullCollection: true);
        long peakRetained = 0;

        var sent = 0;
        var connections = 0;
        while (sent < Frames)
        {
            connections++;
            var frames = random.Next(1, 24);
            var payload = new List<byte>();
            for (var i = 0; i < frames; i++)
            {
                payload.AddRange(Frame(random));
            }

            sent += frames;
            await using (var client = server.Connect())
            {
                // Read while sending, as a real client does: a client that only writes can fill both directions.
                var drain = client.DrainUntilClosedAsync();
                if (random.Next(50) == 0)
                {
                    // A slow drip: one byte per write.
                    foreach (var b in payload.Take(300))
                    {
                        await client.SendAsync(new[] { b });
                    }
                }
                else
                {
                    await client.SendAsync(payload.ToArray());
                }

                await client.CloseAsync();
                var finished = await Task.WhenAny(drain, Task.Delay(TestConnection.Timeout));
                Assert.True(finished == drain && drain.IsCompletedSuccessfully, $"seed {seed}: connection {connections} did not finish: {drain.Exception}");
            }

            if (connections % 100 == 0)
            {
                peakRetained = Math.Max(peakRetained, GC.GetTotalMemory(forceFullCollection: true));
                var value = "v" + connections.ToString(CultureInfo.InvariantCulture);
                Assert.Equal("+OK", (await wellBehaved.CommandAsync("SET", "good", value)).ToString());
                Assert.Equal("$" + value, (await wellBehaved.CommandAsync("GET", "good")).ToString());
            }
        }

        // One real million-argument request, then a protocol error in the same connection. On a server of its own, so
        // that nothing the frames above left behind (keys, write sessions) can change its replies.
        var fresh = new TestServer(o => o.MaxRequestBytes = 8 * 1024 * 1024);
        fresh.Cluster.RecordExecuted = false;
        await using (var client = fresh.Connect())
        {
            var replies = client.DrainUntilClosedAsync();
            var million = new StringBuilder("*1000001\r\n$3\r\nDEL\r\n");
            for (var i = 0; i < 1_000_000; i++)
            {
                million.Append("$1\r\n~\r\n");
            }

            await client.SendAsync(Encoding.ASCII.GetBytes(million.Append("*1\r\n$-9\r\n").ToString()));
            Assert.Equal([":0", "-ERR Protocol error: invalid bulk length"], (await replies).Select(reply => reply.ToString()));
        }

        output.WriteLine($"{sent} frames over {connections} connections; retained managed heap peaked at {peakRetained / (1024 * 1024)} MiB (baseline {baseline / (1024 * 1024)} MiB)");
        Assert.Empty(server.Log.Errors.Concat(fresh.Log.Errors));
        Assert.Empty(server.Cluster.SessionViolations);
        Assert.Equal("+PONG", (await wellBehaved.CommandAsync("PING")).ToString());
        Assert.Equal(1, server.Clients.ConnectedClients);
        Assert.True(peakRetained - baseline < 16L * 1024 * 1024, $"seed {seed}: retained managed heap grew by {(peakRetained - baseline) / (1024 * 1024)} MiB");
    }

    private static byte[] Frame(Random random)
    {
        var valid = TestConnection.Encode(ValidCommands[random.Next(ValidCommands.Length)]);
        switch (random.Next(12))
        {
            case 0:
            case 1:
            case 2:
                return valid;
            case 3:
                return Mutate(valid, random);
            case 4:
                return valid[..random.Next(valid.Length)];
            case 5:
                var garbage = new byte[random.Next(1, 200)];
                random.NextBytes(garbage);
                return garbage;
            case 6:
                return Encoding.ASCII.GetBytes(random.Next(6) switch
                {
                    0 => "*-" + random.Next(100) + "\r\n",
                    1 => "*1\r\n$-" + random.Next(100) + "\r\n",
                    2 => "*" + random.NextInt64() + "\r\n",
                    3 => "*1\r\n$" + random.NextInt64() + "\r\n",
                    4 => "*1000000\r\n$3\r\nDEL\r\n",
                    _ => "*2\r\n$3\r\nGET\r\n$" + random.Next(70_000) + "\r\nshort",
                });
            case 7:
                // Inline commands, quotes balanced or not.
                var words = new[] { "GET", "SET", "k", "\"a b\"", "'c'", "\"x\\x41\"", "\"open", "'", "PING", "\t" };
                var line = string.Join(" ", Enumerable.Range(0, random.Next(1, 6)).Select(_ => words[random.Next(words.Length)]));
                return Encoding.Latin1.GetBytes(line + (random.Next(2) == 0 ? "\r\n" : "\n"));
            case 8:
                // A long inline line with no newline yet.
                return Encoding.ASCII.GetBytes(new string('a', random.Next(1000, 6000)));
            case 9:
                // A value near the bulk limit, sometimes just over it.
                var length = (64 * 1024) - 10 + random.Next(20);
                return Encoding.ASCII.GetBytes($"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${length}\r\n{new string('v', length)}\r\n");
            case 10:
                // A frame of many small arguments.
                var count = random.Next(1, 5000);
                var many = new StringBuilder($"*{count + 1}\r\n$4\r\nMGET\r\n");
                for (var i = 0; i < count; i++)
                {
                    many.Append("$2\r\nk").Append((char)('a' + (i % 26))).Append("\r\n");
                }

                return Encoding.ASCII.GetBytes(many.ToString());
            default:
                var twice = valid.Concat(Mutate(valid, random)).ToArray();
                return twice;
        }
    }

    private static byte[] Mutate(byte[] frame, Random random)
    {
        var bytes = frame.ToList();
        for (var m = random.Next(1, 4); m > 0 && bytes.Count > 0; m--)
        {
            var at = random.Next(bytes.Count);
            switch (random.Next(4))
            {
                case 0:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 1:
                    bytes.RemoveAt(at);
                    break;
                case 2:
                    bytes.Insert(at, (byte)"*$\r\n-0123456789"[random.Next(15)]);
                    break;
                default:
                    bytes.InsertRange(at, bytes.GetRange(at, Math.Min(bytes.Count - at, random.Next(1, 10))));
                    break;
            }
        }

        return bytes.ToArray();
    }
}

/// <summary>Tests that measure the process-wide heap run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class FuzzCollection
{
    public const string Name = "Fuzz";
}
