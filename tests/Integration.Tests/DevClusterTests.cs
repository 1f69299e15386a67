using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>The README's main command, `dcachectl dev`, as a user runs it: redis-cli works, status shows the cluster, SIGTERM stops everything.</summary>
public sealed class DevClusterTests(ITestOutputHelper output)
{
    [Fact]
    public async Task DevStartsThreeNodesAndAGatewayThatRedisCliUsesAndSigtermStopsThemAll()
    {
        var data = Directory.CreateTempSubdirectory("dcache-dev-test-");
        await using var dev = new ChildProcess("dcachectl dev", RepoPaths.CtlDll);
        try
        {
            var basePort = FreeBasePort();
            var gatewayPort = FreePorts.Allocate(1)[0];
            dev.Start(["dev", "--data", data.FullName, "--base-port", Text(basePort), "--gateway-port", Text(gatewayPort)]);

            // dev says when the cluster is ready; from then on a command works the first time (before, it answered
            // -TRYAGAIN while the nodes had not yet elected a leader).
            await Eventually.WaitAsync(() => dev.RecentOutput(lines: 2000).Contains("Ready: node ", StringComparison.Ordinal),
                TimeSpan.FromSeconds(90), "dev to say its cluster is ready");
            var set = await RedisTools.RedisCliAsync(gatewayPort, "SET greeting hello EX 60");
            Assert.True(set.Output.Trim() == "OK", $"the first SET after dev said ready: {set.Output}\n{dev.RecentOutput(lines: 2000)}");
            Assert.Equal("hello", (await RedisTools.RedisCliAsync(gatewayPort, "GET greeting")).Output.Trim());

            // One endpoint is enough: status also asks every member that node's membership names, and does not ask
            // node 2 again at the address the membership spells differently from the operator.
            var status = await Dcachectl.RunAsync(output, "status", "--endpoints", $"http://localhost:{basePort + 1}", "--cluster-id", "dcache-dev", "--secret", "dev-secret");
            Assert.True(status.Exit == 0, status.ToString());
            Assert.True(3 == status.Output.Split('\n').Count(line => line.StartsWith("http://", StringComparison.Ordinal)), status.ToString());
            Assert.Single(status.Output.Split('\n'), line => line.Contains(" Leader ", StringComparison.Ordinal));
            Assert.Equal(2, status.Output.Split('\n').Count(line => line.Contains(" Follower ", StringComparison.Ordinal)));
            foreach (var node in new[] { "node1", "node2", "node3" })
            {
                Assert.True(Directory.Exists(Path.Combine(data.FullName, node)), $"{node}'s data directory under --data");
            }

            // The status command dev prints must reach this cluster as printed, whatever --base-port says.
            var printed = dev.RecentOutput(lines: 2000);
            Assert.Contains($"-- status --endpoints http://127.0.0.1:{basePort},http://127.0.0.1:{basePort + 1},http://127.0.0.1:{basePort + 2} ", printed, StringComparison.Ordinal);
            // Four processes' logs share dev's output: each line names its process.
            foreach (var process in new[] { "node 1", "node 2", "node 3", "gateway" })
            {
                Assert.Contains($"\n{process} | ", printed, StringComparison.Ordinal);
            }


            var children = ChildrenOf(dev.ProcessId!.Value);
            Assert.Equal(4, children.Length); // three nodes and the gateway
            await dev.StopAsync(TimeSpan.FromSeconds(30));
            Assert.False(dev.IsRunning, dev.RecentOutput());
            await Eventually.WaitAsync(() => children.All(pid => !Directory.Exists($"/proc/{pid}")), TimeSpan.FromSeconds(10), "every node and the gateway to exit");
            var stopped = dev.RecentOutput(lines: 2000);
            Assert.True(stopped.Contains("All nodes stopped.", StringComparison.Ordinal), stopped);
        }
        finally
        {
            dev.Kill();
            data.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task AProcessThatEndsBeforeTheClusterIsReadyStopsTheOthersAndDevFails()
    {
        // The gateway's port is taken: the gateway exits at once. dev waited for Ctrl-C with nothing left to watch.
        var data = Directory.CreateTempSubdirectory("dcache-dev-test-");
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        var takenPort = ((System.Net.IPEndPoint)taken.LocalEndpoint).Port;
        try
        {
            var dev = await Dcachectl.RunAsync(output, "dev", "--nodes", "1", "--data", data.FullName, "--base-port", Text(FreeBasePort()), "--gateway-port", Text(takenPort));
            Assert.True(dev.Exit == 1, dev.ToString());
            Assert.Contains("gateway (process ", dev.Output, StringComparison.Ordinal);
            Assert.Contains("before the cluster was ready", dev.Output, StringComparison.Ordinal);
            Assert.Contains("gateway | dcache-gateway: cannot listen", dev.Error, StringComparison.Ordinal);
            Assert.DoesNotContain("All nodes stopped.", dev.Output, StringComparison.Ordinal);
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static int[] ChildrenOf(int pid) =>
        File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();

    /// <summary>dev derives its ports from one base (nodes base..base+2, health base+1000.., gateway HTTP base+2000): find a base whose ports are all free.</summary>
    private static int FreeBasePort()
    {
        for (var attempt = 0; attempt < 200; attempt++)
        {
            var candidate = Random.Shared.Next(20_000, 27_000);
            int[] ports = [candidate, candidate + 1, candidate + 2, candidate + 1000, candidate + 1001, candidate + 1002, candidate + 2000];
            if (ports.All(IsFree))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException("no free base port for dcachectl dev");
    }

    private static bool IsFree(int port)
    {
        try
        {
            using var listener = new TcpListener(IPAddress.Loopback, port);
            listener.Start();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
