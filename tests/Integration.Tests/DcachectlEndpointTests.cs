using System.Net;
using System.Net.Sockets;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// dcachectl tries its endpoints in turn: one that is down in any way (refusing, silent, or not even completing the
/// connection) must send it on to the next, not end the command.
/// </summary>
public sealed class DcachectlEndpointTests(ITestOutputHelper output)
{
    [Fact]
    public async Task AnEndpointThatNeverAnswersOrNeverConnectsIsPassedOverForTheNext()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3));

        // A paused process: the kernel completes its connections, and nothing ever answers on them.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var held = new List<TcpClient>();
        var holding = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var connection = await silent.AcceptTcpClientAsync(stop.Token);
                lock (held)
                {
                    held.Add(connection);
                }
            }
        });

        // A host that drops the connection attempts: a listener whose accept queue is full takes no more.
        using var full = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        full.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        full.Listen(1);
        var fullPort = ((IPEndPoint)full.LocalEndPoint!).Port;
        var fillers = new List<Socket>();
        for (var i = 0; i < 4; i++)
        {
            var filler = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            fillers.Add(filler);
            _ = filler.ConnectAsync(IPAddress.Loopback, fullPort, stop.Token).AsTask().ContinueWith(static _ => { }, TaskScheduler.Default);
        }

        try
        {
            var silentUrl = $"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}";
            var fullUrl = $"http://127.0.0.1:{fullPort}";
            var endpoints = $"{fullUrl},{silentUrl},{cluster[1].GrpcUrl}";
            string[] credentials = ["--endpoints", endpoints, "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret];

            // (The silent endpoint costs a command about 10 s, until its keepalive ping goes unanswered: once is enough.)
            var list = await Dcachectl.RunAsync(output, ["member", "list", "--endpoints", $"{fullUrl},{cluster[1].GrpcUrl}", "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret]);
            Assert.True(list.Exit == 0, list.ToString());

            // A connection never made sent nothing: the leader's refusal is the answer, not "already in effect after an
            // attempt whose outcome was unknown".
            string[] neverConnected = ["--endpoints", $"{fullUrl},{cluster[1].GrpcUrl}", "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret];
            var remove = await Dcachectl.RunAsync(output, ["member", "remove", "--id", "9", .. neverConnected]);
            Assert.True(remove.Exit == 1, remove.ToString());
            Assert.Contains("node 9 is not a member", remove.Error, StringComparison.Ordinal);

            var backup = Path.Combine(cluster.Root, "backup.dcsnap");
            var save = await Dcachectl.RunAsync(output, ["snapshot", "save", backup, .. credentials]);
            Assert.True(save.Exit == 0, save.ToString());
            Assert.True(File.Exists(backup));
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAny(holding);
            lock (held)
            {
                held.ForEach(connection => connection.Dispose());
            }

            fillers.ForEach(filler => filler.Dispose());
        }
    }
}
