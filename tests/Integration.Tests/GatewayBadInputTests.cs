using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

public sealed class GatewayBadInputTests(ITestOutputHelper output)
{
    [Fact]
    public async Task TenThousandRandomAndMutatedFramesNeverCrashTheGatewayNorDisturbAWellBehavedClient()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable("DCACHE_FUZZ_SEED"), CultureInfo.InvariantCulture, out var fixedSeed) ? fixedSeed : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay: DCACHE_FUZZ_SEED={seed} dotnet test tests/Integration.Tests -c Release --filter FullyQualifiedName~GatewayBadInputTests)");
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        await cluster.StartGatewayAsync();
        var gateway = cluster.Gateway!;
        var port = cluster.GatewayPort;
        var baselineRss = gateway.ResidentBytes();

        // A well-behaved client keeps working throughout, on its own connection.
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var goodFailures = new List<string>();
        var goodRounds = 0;
        var good = Task.Run(async () =>
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            var stream = client.GetStream();
            var buffer = new byte[256];
            for (var i = 0; !stop.IsCancellationRequested; i++)
            {
                var value = $"v{i}";
                var reply = await RoundTripAsync(stream, buffer, $"*3\r\n$3\r\nSET\r\n$4\r\ngood\r\n${value.Length}\r\n{value}\r\n*2\r\n$3\r\nGET\r\n$4\r\ngood\r\n");
                var expected = $"+OK\r\n${value.Length}\r\n{value}\r\n";
                if (reply != expected)
                {
                    lock (goodFailures)
                    {
                        goodFailures.Add(reply);
                    }
                }

                Interlocked.Increment(ref goodRounds);
                await Task.Delay(5);
            }
        });

        var maxRss = baselineRss;
        var random = new Random(seed);
        var frames = 0;
        var closedByServer = 0;
        var sockets = new Socket?[16];
        var drainBuffer = new byte[64 * 1024];
        var clock = Stopwatch.StartNew();
        while (frames < 10_000)
        {
            var slot = random.Next(sockets.Length);
            sockets[slot] ??= Connect(port);
            var socket = sockets[slot]!;
            try
            {
                socket.Send(Frame(random));
                frames++;
                // Readable with nothing to read means the gateway closed this connection (as it should after a protocol error).
                while (socket.Poll(0, SelectMode.SelectRead))
                {
                    if (socket.Available == 0 || socket.Receive(drainBuffer) == 0)
                    {
                        throw new SocketException((int)SocketError.ConnectionReset);
                    }
                }

                if (random.Next(50) == 0)
                {
                    socket.Dispose(); // clients also just go away mid-request
                    sockets[slot] = null;
                }
            }
            catch (SocketException)
            {
                closedByServer++;
                socket.Dispose();
                sockets[slot] = null;
            }

            // Paced at about 2,000 frames/s: this is about malformed input, not about saturating the cluster with the
            // valid writes among the frames (the benchmarks measure load).
            if (frames % 100 == 0)
            {
                var due = TimeSpan.FromMilliseconds(frames / 2.0) - clock.Elapsed;
                if (due > TimeSpan.Zero)
                {
                    await Task.Delay(due);
                }
            }

            if (frames % 500 == 0)
            {
                maxRss = Math.Max(maxRss, gateway.ResidentBytes());
                Assert.True(gateway.IsRunning, $"the gateway died after {frames} frames");
            }
        }

        // A slow drip: a valid command one byte at a time.
        using (var drip = Connect(port))
        {
            foreach (var b in "*2\r\n$4\r\nECHO\r\n$5\r\nslow!\r\n"u8.ToArray())
            {
                drip.Send([b]);
                await Task.Delay(20);
            }

            var buffer = new byte[64];
            drip.ReceiveTimeout = 5000;
            var read = drip.Receive(buffer);
            Assert.Equal("$5\r\nslow!\r\n", Encoding.ASCII.GetString(buffer, 0, read));
        }

        // A million arguments: answered (an unknown command), not a crash.
        using (var many = Connect(port))
        {
            var request = new StringBuilder("*1000000\r\n");
            for (var i = 0; i < 1_000_000; i++)
            {
                request.Append("$1\r\nx\r\n");
            }

            many.Send(Encoding.ASCII.GetBytes(request.ToString()));
            var buffer = new byte[256];
            many.ReceiveTimeout = 30_000;
            var read = many.Receive(buffer);
            Assert.StartsWith("-ERR", Encoding.ASCII.GetString(buffer, 0, read), StringComparison.Ordinal);
        }

        maxRss = Math.Max(maxRss, gateway.ResidentBytes());
        foreach (var socket in sockets)
        {
            socket?.Dispose();
        }

        await stop.CancelAsync();
        await good;
        output.WriteLine($"{frames} frames in {clock.Elapsed.TotalSeconds:F1} s; {closedByServer} connections closed by the gateway; " +
            $"well-behaved client: {goodRounds} rounds; gateway RSS {baselineRss / 1048576} MiB -> max {maxRss / 1048576} MiB");
        Assert.True(gateway.IsRunning, "the gateway died");
        Assert.True(goodFailures.Count == 0, "the well-behaved client saw: " + string.Join(" | ", goodFailures.Take(3)));
        Assert.True(goodRounds > 10, "the well-behaved client made no progress");
        Assert.True(maxRss < baselineRss + (512L << 20), $"gateway memory grew from {baselineRss >> 20} MiB to {maxRss >> 20} MiB");
    }

    private static Socket Connect(int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        socket.Connect(IPAddress.Loopback, port);
        return socket;
    }

    private static async Task<string> RoundTripAsync(NetworkStream stream, byte[] buffer, string request)
    {
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));
        var reply = new StringBuilder();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (!reply.ToString().EndsWith("\r\n", StringComparison.Ordinal) || reply.ToString().Split("\r\n").Length < 4)
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            if (read == 0)
            {
                return reply + "<closed>";
            }

            reply.Append(Encoding.ASCII.GetString(buffer, 0, read));
        }

        return reply.ToString();
    }

    /// <summary>One random or mutated RESP frame.</summary>
    private static byte[] Frame(Random random)
    {
        string[] valid =
        [
            "*1\r\n$4\r\nPING\r\n",
            "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n",
            "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
            "*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n",
            "PING\r\n",
            "SET inline \"quoted value\"\r\n",
            "*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n",
        ];
        switch (random.Next(10))
        {
            case 0: // binary garbage
                var garbage = new byte[random.Next(1, 300)];
                random.NextBytes(garbage);
                return garbage;
            case 1: // negative and huge lengths
                string[] lengths = ["*-5\r\n", "$-3\r\n", "*2147483647\r\n", "$2147483647\r\n", "*99999999999999999999\r\n", "$9223372036854775807\r\n", "*1\r\n$-1\r\n", "*x\r\n"];
                return Encoding.ASCII.GetBytes(lengths[random.Next(lengths.Length)]);
            case 2: // truncated valid frame
                var full = valid[random.Next(valid.Length)];
                return Encoding.ASCII.GetBytes(full[..random.Next(1, full.Length)]);
            case 3: // a valid frame with flipped bytes
                var bytes = Encoding.ASCII.GetBytes(valid[random.Next(valid.Length)]);
                for (var i = random.Next(1, 4); i > 0; i--)
                {
                    bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
                }

                return bytes;
            case 4: // an overlong inline line
                return Encoding.ASCII.GetBytes(new string('a', random.Next(1000, 100_000)) + "\r\n");
            default:
                return Encoding.ASCII.GetBytes(valid[random.Next(valid.Length)]);
        }
    }
}
