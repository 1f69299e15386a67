using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;
using static Dcache.Gateway.Tests.CacheClusterBatchTests;

namespace Dcache.Gateway.Tests;

/// <summary>
/// The cluster client keeps nothing for an attempt nobody waits for: an attempt that timed out, or whose client left,
/// leaves its stream's in-flight table at once (a node that never answers would otherwise hold it until the stream
/// breaks), and a node that takes in nothing (its writer stuck behind HTTP/2 flow control) holds no more than
/// <see cref="ClusterOptions.MaxCommandsPerNode"/> commands however long load goes on.
/// </summary>
public sealed class CacheClusterBacklogTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AttemptsAtANodeThatLeavesCommandsUnansweredLeaveNothingBehindAndALateReplyReachesOnlyItsOwnCommand()
    {
        var seed = Environment.GetEnvironmentVariable("DCACHE_BACKLOG_SEED") is { Length: > 0 } text ? int.Parse(text, System.Globalization.CultureInfo.InvariantCulture) : Random.Shared.Next();
        output.WriteLine($"seed {seed} (replay: DCACHE_BACKLOG_SEED={seed})");
        var random = new Random(seed);
        const int attemptMs = 200;

        // A third of the keys answered at once, a third about when their attempt times out (just before or just after),
        // a third never; the stream itself stays open throughout.
        await using var node = await ScriptedNode.StartAsync(
            command => KeyIndex(command) % 3 == 2 ? ScriptedNode.Unanswered : Answer("node")(command),
            command =>
            {
                if (KeyIndex(command) % 3 != 1)
                {
                    return TimeSpan.Zero;
                }

                lock (random)
                {
                    return TimeSpan.FromMilliseconds(attemptMs * (0.8 + (0.4 * random.NextDouble())));
                }
            });
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = node.Address,
            AttemptTimeoutMilliseconds = attemptMs,
            DeadlineMilliseconds = 1_000,
            BreakAfterFailures = 10_000, // attempts keep going to the node: what they leave behind is what is measured
        });

        // The stream open and its paths warm first: a cold start can take longer than the deadline.
        var until = DateTime.UtcNow + Patience;
        while ((await cluster.ExecuteAsync(Get("key-0"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).ResultCase != Reply.ResultOneofCase.Bulk)
        {
            Assert.True(DateTime.UtcNow < until, "the node never answered");
        }

        const int commands = 10_000;
        var calls = Enumerable.Range(0, commands).Select(i => new ClusterCall(Get($"key-{i}"), ReadMode.Linearizable)).ToArray();
        foreach (var wave in calls.Chunk(100))
        {
            cluster.ExecuteAll(wave, CancellationToken.None);
        }

        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);
        var connection = Assert.Single(cluster.Nodes);
        output.WriteLine($"the node received {node.CommandsReceived} commands in {node.Received.Count} messages");
        Assert.True(node.CommandsReceived >= 1_000, $"seed {seed}: the node received only {node.CommandsReceived} commands");

        var answered = 0;
        for (var i = 0; i < commands; i++)
        {
            if (replies[i].ResultCase == Reply.ResultOneofCase.Bulk)
            {
                Assert.Equal($"node:key-{i}", replies[i].Bulk.ToStringUtf8());
                answered++;
            }
            else
            {
                Assert.True(i % 3 != 2 || replies[i].Failure?.Kind == FailureKind.Unavailable, $"seed {seed}: key-{i}, never answered, got {replies[i]}");
            }
        }

        Assert.True(answered >= 100, $"seed {seed}: only {answered} commands were answered");

        // Every attempt is over, and its commands left the table with it; the replies still on their way find nothing.
        Assert.Equal(0, connection.CommandsSent);
        // Attempts abandoned while queued leave the queue as the writer, which may be behind, passes over them.
        await WaitUntilAsync(() => connection.CommandsQueued == 0, () => $"{connection.CommandsQueued} commands still queued");
        Assert.Equal(0, connection.CommandsSent);
    }

    [Fact]
    public async Task ANodeThatTakesInNothingHoldsNoMoreThanItsBacklogWhileLoadGoesOn()
    {
        // Accepts connections and never reads a byte: what a SIGSTOPped node or a black hole looks like. The gateway's
        // writer is soon stuck behind HTTP/2 flow control, and its queue is all that grows.
        using var stalled = new SilentListener();
        const int backlog = 1_000;
        const int wave = 50;
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = stalled.Address,
            MaxCommandsPerNode = backlog,
            AttemptTimeoutMilliseconds = 300,
            DeadlineMilliseconds = 800,
            BreakAfterFailures = 10_000,
        });
        var connection = Assert.Single(cluster.Nodes);

        var peak = 0;
        var peakSent = 0;
        using var stop = new CancellationTokenSource();
        var sampler = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                peak = Math.Max(peak, connection.CommandsQueued + connection.CommandsSent);
                peakSent = Math.Max(peakSent, connection.CommandsSent);
                await Task.Delay(1);
            }
        });

        // 15,000 commands over about a second and a half, with keys long enough to fill a flow-control window soon.
        var calls = new List<ClusterCall>();
        var padding = new string('k', 200);
        Reply[] replies;
        try
        {
            for (var round = 0; round < 60; round++)
            {
                for (var w = 0; w < 5; w++)
                {
                    var batch = Enumerable.Range(0, wave).Select(i => new ClusterCall(Get($"{padding}-{round}-{w}-{i}"), ReadMode.Linearizable)).ToArray();
                    calls.AddRange(batch);
                    cluster.ExecuteAll(batch, CancellationToken.None);
                }

                await Task.Delay(20); // pacing, as a client's load arrives
            }

            replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);
        }
        finally
        {
            // Also when the replies never come: the sampler must not outlive the test.
            await stop.CancelAsync();
            await sampler;
        }

        output.WriteLine($"peak held {peak}, of which sent {peakSent}");
        Assert.All(replies, reply => Assert.Equal(FailureKind.Unavailable, reply.Failure?.Kind));
        // A writer takes a batch off the queue before its commands count as sent: one batch per stream may be between.
        Assert.True(peak <= backlog + (2 * wave), $"the node held {peak} commands at its peak (backlog {backlog})");
        Assert.True(peak >= backlog / 2, $"the node held only {peak} commands at its peak: the backlog was never tested");
        Assert.Equal(0, connection.CommandsSent);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)] // a FIN, as from a client that only shut down its sending side: given up after the grace
    public async Task AClientThatLeavesWithCommandsInFlightLeavesNothingAtTheNode(bool reset)
    {
        // Nothing times out here for a minute: only the client's leaving can end its commands' attempts.
        await using var node = await ScriptedNode.StartAsync(_ => ScriptedNode.Unanswered);
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = node.Address,
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 120_000,
        });
        const int commands = 1_000;
        var pipeline = Enumerable.Range(0, commands).SelectMany(i => Encoding.ASCII.GetBytes($"*2\r\n$3\r\nGET\r\n${$"k-{i}".Length}\r\nk-{i}\r\n")).ToArray();
        // The gateway reads the whole pipeline at once: taken in a few KB at a time (as Kestrel does), a first read of part
        // of it would start only those commands and wait for their replies, which never come, before reading the rest.
        await using var gateway = await KestrelGateway.StartAsync(over: cluster, firstReadBytes: pipeline.Length);
        var connection = Assert.Single(cluster.Nodes);
        var gauge = new NodeCommandsGauge();

        using (var client = new TcpClient())
        {
            await client.ConnectAsync(IPAddress.Loopback, gateway.Port);
            await client.GetStream().WriteAsync(pipeline);
            await WaitUntilAsync(() => connection.CommandsSent == commands, () => $"{connection.CommandsSent} of {commands} commands sent");
            Assert.Equal(commands, gauge.Read(node.Address, "sent"));
            if (reset)
            {
                // Closed here, not by TcpClient.Dispose: that shuts the stream down first, a FIN before the reset, and a
                // gateway slow to look (a loaded machine) saw the FIN alone and gave the commands the half-close grace.
                client.Client.LingerState = new LingerOption(true, 0);
                client.Client.Close();
            }
        }

        var left = System.Diagnostics.Stopwatch.StartNew();
        await Eventually.WaitAsync(() => connection.CommandsSent == 0, Patience + Resp.RespConnectionHandler.HalfCloseGrace,
            () => $"{connection.CommandsSent} commands still held for the node {left.Elapsed.TotalSeconds:F1} s after their client left");
        if (reset)
        {
            Assert.True(left.Elapsed < Resp.RespConnectionHandler.HalfCloseGrace, $"a reset connection's commands were held {left.Elapsed.TotalSeconds:F1} s");
        }

        Assert.Equal(0, gauge.Read(node.Address, "sent"));
        Assert.Equal(0, connection.CommandsQueued);
    }

    private static int KeyIndex(Command command) => int.Parse(command.Get.Key.ToStringUtf8().AsSpan("key-".Length), System.Globalization.CultureInfo.InvariantCulture);

    private static Task WaitUntilAsync(Func<bool> condition, Func<string> describe) => Eventually.WaitAsync(condition, Patience, describe);

    /// <summary>A TCP listener on 127.0.0.1 that accepts connections and never reads from them.</summary>
    private sealed class SilentListener : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly ConcurrentBag<Socket> _accepted = [];
        private readonly Task _accepting;

        public SilentListener()
        {
            _listener.Start();
            Address = $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";
            _accepting = AcceptAsync();
        }

        public string Address { get; }

        private async Task AcceptAsync()
        {
            try
            {
                while (true)
                {
                    _accepted.Add(await _listener.AcceptSocketAsync());
                }
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
            {
                // Stopped.
            }
        }

        public void Dispose()
        {
            _listener.Stop();
            _accepting.Wait(Patience);
            foreach (var socket in _accepted)
            {
                socket.Dispose();
            }
        }
    }
}
