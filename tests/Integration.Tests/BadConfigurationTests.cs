using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// A mistyped setting stops a node or a gateway at start with exit code 2 and one line naming it, rather than a stack
/// trace or a process that runs but can never work.
/// </summary>
public sealed class BadConfigurationTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ExitPatience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task ANodeAndAGatewayWithABadSettingEachExitWithCode2AndALineNamingIt()
    {
        var data = Directory.CreateTempSubdirectory("bad-configuration-");
        var ports = FreePorts.Allocate(4);
        await using var node = new ChildProcess("node", RepoPaths.NodeDll);
        await using var gateway = new ChildProcess("gateway", RepoPaths.GatewayDll);
        try
        {
            // A host name where the listener needs an address: it used to end in an unhandled FormatException.
            node.Start([.. NodeArguments(1, ports[0], ports[1], Path.Combine(data.FullName, "node1")), $"--Dcache:Node:GrpcUrl=http://node1.invalid:{ports[0]}"]);
            // No status poll: the gateway used to start and never learn of a leader, so every write failed.
            gateway.Start([.. GatewayArguments(ports[0], ports[2], ports[3]), "--Dcache:Gateway:Cluster:StatusPollMilliseconds=0"]);

            await AssertRefusedAsync(node, "dcache-node: invalid configuration: Dcache:Node:GrpcUrl must be http://<IP address or localhost>:<port 1-65535>, not 'http://node1.invalid:");
            await AssertRefusedAsync(gateway, "dcache-gateway: invalid configuration: Dcache:Gateway:Cluster:StatusPollMilliseconds must be at least 1, not 0");
            Assert.False(Directory.Exists(Path.Combine(data.FullName, "node1")), "the refused node created its data directory");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// A key that names no setting: the configuration binder ignores it, so a misspelt setting used to leave its default
    /// in force without a word (ElectionTick for ElectionTicks ran with the default election timeout).
    /// </summary>
    [Fact]
    public async Task ANodeAndAGatewayGivenAKeyThatNamesNoSettingEachExitWithCode2AndALineNamingTheClosestOne()
    {
        var data = Directory.CreateTempSubdirectory("unknown-setting-");
        var ports = FreePorts.Allocate(6);
        await using var node = new ChildProcess("node", RepoPaths.NodeDll);
        await using var nodeUnderWrongSection = new ChildProcess("node under a wrong section", RepoPaths.NodeDll);
        await using var gateway = new ChildProcess("gateway", RepoPaths.GatewayDll);
        try
        {
            node.Start([.. NodeArguments(1, ports[0], ports[1], Path.Combine(data.FullName, "node1")), "--Dcache:Node:ElectionTick=20"]);
            nodeUnderWrongSection.Start([.. NodeArguments(2, ports[2], ports[3], Path.Combine(data.FullName, "node2")), "--Dcache:Nodes:ElectionTicks=20"]);
            gateway.Start([.. GatewayArguments(ports[0], ports[4], ports[5]), "--Dcache:Gateway:Resp:RequirePassword=secret"]);

            await AssertRefusedAsync(node, "dcache-node: invalid configuration: Dcache:Node:ElectionTick is not a setting (did you mean Dcache:Node:ElectionTicks?)");
            await AssertRefusedAsync(nodeUnderWrongSection, "dcache-node: invalid configuration: Dcache:Nodes is not a setting (did you mean Dcache:Node?)");
            await AssertRefusedAsync(gateway, "dcache-gateway: invalid configuration: Dcache:Gateway:Resp:RequirePassword is not a setting (did you mean Dcache:Gateway:Resp:RequirePass?)");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task ANodeWhoseDataDirectoryCannotBeWrittenExitsWithCode2AndALineNamingItAndTheSystemsReason()
    {
        var root = Directory.CreateTempSubdirectory("unwritable-data-");
        var ports = FreePorts.Allocate(4);
        await using var onReadOnlyDisk = new ChildProcess("node on a read-only disk", RepoPaths.NodeDll);
        await using var underAFile = new ChildProcess("node under a file", RepoPaths.NodeDll);
        try
        {
            using var disk = await SmallDisk.MountAsync(Path.Combine(root.FullName, "read-only"), megabytes: 1);
            await disk.MakeReadOnlyAsync();
            var readOnlyData = Path.Combine(disk.Path, "node1");
            var file = Path.Combine(root.FullName, "file");
            await File.WriteAllTextAsync(file, "");
            var fileData = Path.Combine(file, "node2");

            // Both used to end in an unhandled exception and its stack trace, once storage began to open.
            onReadOnlyDisk.Start(NodeArguments(1, ports[0], ports[1], readOnlyData));
            underAFile.Start(NodeArguments(2, ports[2], ports[3], fileData));

            await AssertRefusedAsync(onReadOnlyDisk, $"dcache-node: invalid configuration: Dcache:Node:DataDirectory '{readOnlyData}' cannot be written: creating directory {readOnlyData} failed: Read-only file system");
            await AssertRefusedAsync(underAFile, $"dcache-node: invalid configuration: Dcache:Node:DataDirectory '{fileData}' cannot be written: creating directory {fileData} failed: Not a directory");
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task ASecondNodeOnADataDirectoryARunningNodeHoldsExitsWithCode2AndALineSayingSo()
    {
        var data = Directory.CreateTempSubdirectory("data-in-use-");
        var ports = FreePorts.Allocate(4);
        await using var running = new ChildProcess("running node", RepoPaths.NodeDll);
        await using var second = new ChildProcess("second node", RepoPaths.NodeDll);
        try
        {
            var directory = Path.Combine(data.FullName, "node1");
            running.Start(NodeArguments(1, ports[0], ports[1], directory));
            await Eventually.WaitAsync(() => running.RecentOutput().Contains("Now Leader", StringComparison.Ordinal), ExitPatience, () => $"the running node never led:\n{running.RecentOutput()}");

            // It used to end in an unhandled InvalidOperationException and its stack trace.
            second.Start(NodeArguments(1, ports[2], ports[3], directory));

            await AssertRefusedAsync(second, $"dcache-node: data directory {directory} is in use by another process (a running node?): stop it first");
            Assert.True(running.IsRunning, $"the running node stopped:\n{running.RecentOutput()}");
        }
        finally
        {
            await running.StopAsync(ExitPatience);
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Review 22: of the three refusals opening a data directory makes, only "in use" was answered with exit code 2 and
    /// a line; a directory of another node (a wrong NodeId) ended in an unhandled exception, exit code 134.
    /// </summary>
    [Fact]
    public async Task ANodeStartedOnAnotherNodesDataDirectoryExitsWithCode2AndALineSayingWhose()
    {
        var data = Directory.CreateTempSubdirectory("data-of-another-node-");
        var ports = FreePorts.Allocate(2);
        await using var first = new ChildProcess("node 1", RepoPaths.NodeDll);
        await using var wrongId = new ChildProcess("node 2 on node 1's directory", RepoPaths.NodeDll);
        try
        {
            var directory = Path.Combine(data.FullName, "node1");
            await FoundAndStopAsync(first, ports, directory);

            wrongId.Start(NodeArguments(2, ports[0], ports[1], directory));

            await AssertRefusedAsync(wrongId, $"dcache-node: data directory {Path.Combine(directory, "meta.db")} belongs to node 1 of cluster dcache, not node 2 of cluster dcache");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// A node whose log no longer reads back as written (a byte of a durable record flipped, as a failing disk does)
    /// refuses to start: exit code 3 (a storage failure) and a line naming the file, not an unhandled exception.
    /// </summary>
    [Fact]
    public async Task ANodeWhoseLogIsDamagedExitsWithCode3AndALineNamingTheFile()
    {
        var data = Directory.CreateTempSubdirectory("damaged-log-");
        var ports = FreePorts.Allocate(2);
        await using var first = new ChildProcess("node 1", RepoPaths.NodeDll);
        await using var again = new ChildProcess("node 1 again", RepoPaths.NodeDll);
        try
        {
            var directory = Path.Combine(data.FullName, "node1");
            await FoundAndStopAsync(first, ports, directory);

            // The first record (the founding membership) starts at address 64: a byte inside it.
            var segment = Path.Combine(directory, "raft-log", "log.0");
            using (var file = File.Open(segment, FileMode.Open, FileAccess.ReadWrite))
            {
                file.Position = 64 + 30;
                var value = file.ReadByte();
                file.Position = 64 + 30;
                file.WriteByte((byte)(value ^ 0xFF));
            }

            again.Start(NodeArguments(1, ports[0], ports[1], directory));
            await Eventually.WaitAsync(() => again.ExitCode is not null, ExitPatience, () => $"{again.Name} still running:\n{again.RecentOutput()}");
            var printed = again.RecentOutput();
            output.WriteLine(printed);
            Assert.Equal(3, again.ExitCode);
            Assert.Contains($"dcache-node: storage corruption in {segment}", printed, StringComparison.Ordinal);
            Assert.DoesNotContain("Unhandled exception", printed, StringComparison.Ordinal);
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// An address this host does not have: Kestrel raises a SocketException, not the IOException of a port in use, and
    /// the node ended in an unhandled exception (exit code 134).
    /// </summary>
    [Fact]
    public async Task ANodeWhoseListenAddressIsNotOnThisHostExitsWithCode2AndALine()
    {
        var data = Directory.CreateTempSubdirectory("address-not-here-");
        var ports = FreePorts.Allocate(2);
        await using var node = new ChildProcess("node", RepoPaths.NodeDll);
        try
        {
            // 192.0.2.0/24 is reserved for documentation: no host has it.
            var arguments = NodeArguments(1, ports[0], ports[1], Path.Combine(data.FullName, "node1"))
                .Select(argument => argument.Replace($"--Dcache:Node:GrpcUrl=http://127.0.0.1:{ports[0]}", $"--Dcache:Node:GrpcUrl=http://192.0.2.1:{ports[0]}", StringComparison.Ordinal))
                .ToArray();
            node.Start(arguments);
            await AssertRefusedAsync(node, "dcache-node: cannot listen:");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// Metadata of a newer build (an upgrade rolled back after it migrated meta.db): refused with a line, not a stack trace.
    /// </summary>
    [Fact]
    public async Task ANodeWhoseMetadataIsNewerThanItsBuildExitsWithCode2AndALine()
    {
        var data = Directory.CreateTempSubdirectory("newer-metadata-");
        var ports = FreePorts.Allocate(2);
        await using var first = new ChildProcess("node 1", RepoPaths.NodeDll);
        await using var again = new ChildProcess("node 1 again", RepoPaths.NodeDll);
        try
        {
            var directory = Path.Combine(data.FullName, "node1");
            await FoundAndStopAsync(first, ports, directory);
            using (var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(directory, "meta.db")};Pooling=False"))
            {
                connection.Open();
                using var bump = connection.CreateCommand();
                bump.CommandText = "PRAGMA user_version = 999";
                bump.ExecuteNonQuery();
            }

            again.Start(NodeArguments(1, ports[0], ports[1], directory));
            await AssertRefusedAsync(again, $"dcache-node: data directory {Path.Combine(directory, "meta.db")} has schema version 999, newer than this build understands");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>
    /// A port another process holds (a second node on the same ports, a Redis server on the gateway's 6379): both ended
    /// in an unhandled IOException and its stack trace, exit code 134 (review 22).
    /// </summary>
    [Fact]
    public async Task ANodeAndAGatewayWhosePortIsTakenEachExitWithCode2AndALineNamingTheAddress()
    {
        var data = Directory.CreateTempSubdirectory("port-taken-");
        var ports = FreePorts.Allocate(4);
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, ports[0]);
        using var takenToo = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, ports[2]);
        taken.Start();
        takenToo.Start();
        await using var node = new ChildProcess("node", RepoPaths.NodeDll);
        await using var gateway = new ChildProcess("gateway", RepoPaths.GatewayDll);
        try
        {
            node.Start(NodeArguments(1, ports[0], ports[1], Path.Combine(data.FullName, "node1")));
            gateway.Start([
                $"--Dcache:Gateway:Cluster:Nodes=http://127.0.0.1:{ports[0]}", "--Dcache:Gateway:Cluster:ClusterSecret=s",
                $"--Dcache:Gateway:Port={ports[2]}", $"--Dcache:Gateway:HttpUrl=http://127.0.0.1:{ports[3]}",
            ]);

            await AssertRefusedAsync(node, $"dcache-node: cannot listen: Failed to bind to address http://127.0.0.1:{ports[0]}: address already in use");
            await AssertRefusedAsync(gateway, $"dcache-gateway: cannot listen: Failed to bind to address http://127.0.0.1:{ports[2]}: address already in use");
        }
        finally
        {
            data.Delete(recursive: true);
        }
    }

    /// <summary>Starts node 1 of a one-node cluster in <paramref name="directory"/>, waits until it leads, and stops it: a data directory in use before.</summary>
    private static async Task FoundAndStopAsync(ChildProcess node, int[] ports, string directory)
    {
        node.Start(NodeArguments(1, ports[0], ports[1], directory));
        await Eventually.WaitAsync(() => node.RecentOutput().Contains("Now Leader", StringComparison.Ordinal), ExitPatience, () => $"node 1 never led:\n{node.RecentOutput()}");
        await node.StopAsync(ExitPatience);
    }

    private static string[] GatewayArguments(int nodeGrpcPort, int port, int httpPort) =>
    [
        $"--Dcache:Gateway:Cluster:Nodes=http://127.0.0.1:{nodeGrpcPort}", "--Dcache:Gateway:Cluster:ClusterSecret=s",
        $"--Dcache:Gateway:Port={port}", $"--Dcache:Gateway:HttpUrl=http://127.0.0.1:{httpPort}",
    ];

    private static string[] NodeArguments(ulong id, int grpcPort, int httpPort, string dataDirectory) =>
    [
        $"--Dcache:Node:NodeId={id}", "--Dcache:Node:ClusterSecret=s",
        $"--Dcache:Node:InitialCluster={id}=http://127.0.0.1:{grpcPort}",
        $"--Dcache:Node:GrpcUrl=http://127.0.0.1:{grpcPort}", $"--Dcache:Node:HttpUrl=http://127.0.0.1:{httpPort}",
        $"--Dcache:Node:DataDirectory={dataDirectory}",
    ];

    private async Task AssertRefusedAsync(ChildProcess process, string message)
    {
        await Eventually.WaitAsync(() => process.ExitCode is not null, ExitPatience, () => $"{process.Name} still running:\n{process.RecentOutput()}");
        var printed = process.RecentOutput();
        output.WriteLine(printed);
        Assert.Equal(2, process.ExitCode);
        Assert.Contains(message, printed, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", printed, StringComparison.Ordinal);
    }
}
