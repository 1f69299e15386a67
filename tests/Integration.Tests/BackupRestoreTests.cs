using System.Globalization;
using System.Text.RegularExpressions;
using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Dcache.Protocol.Raft;
using Grpc.Core;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>The runbook's backup, verify and restore steps (docs/operations.md), run as an operator runs them.</summary>
public sealed partial class BackupRestoreTests(ITestOutputHelper output)
{
    [Fact]
    public async Task SnapshotSavedUnderWritesVerifiesRejectsDamageAndRestoresIntoANewClusterThatRefusesTheOldOne()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var endpoints = string.Join(",", cluster.Nodes.Values.Select(n => n.GrpcUrl));
        var backup = Path.Combine(cluster.Root, "backup.dcsnap");

        // Backup while writes run: everything acknowledged before the call must be in the file.
        Dictionary<string, string> acknowledgedBefore;
        await using (var load = new WriteLoad(cluster, writers: 8, maxWritesPerWriter: 5_000, maxDuration: TimeSpan.FromSeconds(90)))
        {
            await load.WaitForAcknowledgedAsync(1_000, TimeSpan.FromSeconds(60));
            acknowledgedBefore = load.Acknowledged.ToDictionary();
            var saveStarted = load.Elapsed;
            var save = await Dcachectl.RunAsync(output, "snapshot", "save", backup, "--endpoints", endpoints, "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret);
            var saveEnded = load.Elapsed;
            Assert.True(save.Exit == 0, save.ToString());
            Assert.Contains(load.AcknowledgedAt, t => t > saveStarted && t < saveEnded);
            await load.StopAsync();
        }

        var verify = await Dcachectl.RunAsync(output, "snapshot", "verify", backup);
        Assert.True(verify.Exit == 0, verify.ToString());
        Assert.Contains($"cluster id: {cluster.ClusterId}", verify.Output, StringComparison.Ordinal);
        var keys = int.Parse(KeysLine().Match(verify.Output).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(keys >= acknowledgedBefore.Count, $"the backup holds {keys} keys, fewer than the {acknowledgedBefore.Count} acknowledged before it");

        await RejectsDamagedCopiesAsync(backup);

        // Restore into a new three-node cluster, one data directory per member, then start it.
        await using var restored = new LocalCluster(output, clusterId: $"restored-cluster-{Guid.NewGuid():N}");
        foreach (var node in restored.Nodes.Values)
        {
            var restore = await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", node.DataDirectory, "--node-id", LocalCluster.Text((int)node.Id),
                "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster);
            Assert.True(restore.Exit == 0, restore.ToString());
        }

        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", restored[1].DataDirectory, "--node-id", "1",
            "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster), 1, "is not empty");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", Path.Combine(restored.Root, "same-id"), "--node-id", "1",
            "--cluster-id", cluster.ClusterId, "--initial-cluster", restored.InitialCluster), 1, "must name a new cluster");
        Assert.False(Directory.Exists(Path.Combine(restored.Root, "same-id")));

        await restored.StartAsync();
        foreach (var node in restored.Nodes.Keys)
        {
            var missing = await Verify.MissingAsync(restored, node, acknowledgedBefore);
            Assert.True(missing.Count == 0, $"restored node {node} lacks {missing.Count} writes acknowledged before the backup, e.g. {string.Join(", ", missing.Take(5))}");
        }

        // Clients reach it through a gateway configured with the new nodes and cluster id, as the runbook says.
        await restored.StartGatewayAsync();
        await using (var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{restored.GatewayPort}"))
        {
            var (key, value) = acknowledgedBefore.First();
            Assert.Equal(value, (string?)await redis.GetDatabase().StringGetAsync(key));
            Assert.True(await redis.GetDatabase().StringSetAsync("after-restore", "yes"));
        }

        await Verify.SameDigestAsync(restored, TimeSpan.FromSeconds(20));

        await OldClusterIsRefusedAsync(cluster, restored);
    }

    [Fact]
    public async Task AClusterRestoredWithOneMemberNeverStartedAcceptsCopyAndTransactions()
    {
        // A backup of a cluster that never wrote: its state says nothing of the format the cluster writes.
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        var backup = Path.Combine(cluster.Root, "backup.dcsnap");
        var save = await Dcachectl.RunAsync(output, ["snapshot", "save", backup, .. cluster.CtlOptions()]);
        Assert.True(save.Exit == 0, save.ToString());

        // Node 3 of the new cluster never starts: nodes 1 and 2 never hear which format it reads.
        await using var restored = new LocalCluster(output, clusterId: $"restored-cluster-{Guid.NewGuid():N}");
        foreach (var node in restored.Nodes.Values)
        {
            var restore = await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", node.DataDirectory, "--node-id", LocalCluster.Text((int)node.Id),
                "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster);
            Assert.True(restore.Exit == 0, restore.ToString());
        }

        restored[1].Start();
        restored[2].Start();
        var leader = await restored.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        Assert.True((await restored.ExecuteAsync(leader, Commands.Set("first", "1"))).Ok);
        var copy = await restored.ExecuteAsync(leader, Commands.Copy("first", "second"));
        Assert.True(copy.Integer == 1, $"COPY on a restored cluster with a member down: {copy}");
        var exec = await restored.ExecuteAsync(leader, Commands.Transaction(Commands.IncrBy("n", 1), Commands.Get("n")));
        Assert.True(exec.ResultCase == Reply.ResultOneofCase.Array, $"MULTI/EXEC on a restored cluster with a member down: {exec}");
    }

    [Fact]
    public async Task AfterLosingTwoOfThreeNodesTheRunbookBringsTheSurvivorsCommittedDataBackAsANewCluster()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        Dictionary<string, string> acknowledged;
        await using (var load = new WriteLoad(cluster, writers: 8, maxWritesPerWriter: 200, maxDuration: TimeSpan.FromSeconds(60)))
        {
            await load.WaitForAcknowledgedAsync(1_000, TimeSpan.FromSeconds(60));
            await load.StopAsync();
            acknowledged = load.Acknowledged.ToDictionary();
        }

        // Every node has learned the commit index that covers every acknowledged write; then both followers are lost
        // for good. The leader survives, and takes one more write it can no longer commit: recovery must discard it.
        await Verify.CaughtUpAsync(cluster, TimeSpan.FromSeconds(20));
        var survivor = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10));
        var commitBefore = (await cluster.StatusAsync(survivor)).CommitIndex;
        var lostNodes = cluster.Nodes.Keys.Where(id => id != survivor).ToArray();

        // Frozen first (a signal, at once) and killed after the write: killing waits for each process to exit, and on a
        // busy machine that wait could outlast the leader's check-quorum timeout (one election timeout), after which it
        // would refuse the write instead of appending it.
        foreach (var lost in lostNodes)
        {
            cluster[lost].Pause();
        }

        var unacknowledged = await cluster.ExecuteAsync(survivor, Commands.Set("never-acknowledged", "lost"));
        Assert.Equal(Reply.ResultOneofCase.Failure, unacknowledged.ResultCase);
        foreach (var lost in lostNodes)
        {
            cluster[lost].Kill();
        }

        // Without a quorum no read index can be confirmed, so no backup can promise every acknowledged write: refused.
        var noQuorum = await Dcachectl.RunAsync(output, ["snapshot", "save", Path.Combine(cluster.Root, "no-quorum.dcsnap"), .. cluster.CtlOptions([survivor])]);
        Dcachectl.AssertFails(noQuorum, 1, "unavailable: cannot take a consistent snapshot");

        // The runbook: stop the survivor (the offline tools refuse a running node's data), inspect it, force a new
        // cluster from it, start it with the new cluster id.
        var data = cluster[survivor].DataDirectory;
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", data, "--cluster-id", "recovered-cluster"), 1, "is in use by another process");
        await cluster[survivor].StopAsync(TimeSpan.FromSeconds(15));
        var inspect = await Dcachectl.RunAsync(output, "recover", "inspect", "--data", data);
        Assert.True(inspect.Exit == 0, inspect.ToString());
        var commit = ulong.Parse(CommitLine().Match(inspect.Output).Groups[1].Value, CultureInfo.InvariantCulture);
        var lastIndex = ulong.Parse(LastIndexLine().Match(inspect.Output).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(commit >= commitBefore, $"inspect reports commit index {commit}, below the {commitBefore} the running node reported");
        Assert.True(lastIndex > commit, $"the unacknowledged write should lie after the commit index {commit}, but the log ends at {lastIndex} (the write was answered {unacknowledged})");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", data, "--cluster-id", cluster.ClusterId), 1, "must name a new cluster");
        Assert.Contains("founded from: bootstrap:", inspect.Output, StringComparison.Ordinal);
        var force = await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", data, "--cluster-id", "recovered-cluster");
        Assert.True(force.Exit == 0, force.ToString());
        Assert.Contains($"discarded: {lastIndex - commit} entries after the commit index", force.Output, StringComparison.Ordinal);

        // The recovery is a founding of its own: a second survivor recovered apart would be refused by this one.
        var recovered = await Dcachectl.RunAsync(output, "recover", "inspect", "--data", data);
        Assert.Contains("founded from: recovery:", recovered.Output, StringComparison.Ordinal);

        cluster.ClusterId = "recovered-cluster";
        cluster[survivor].Start();
        Assert.Equal(survivor, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30)));
        Assert.Equal([survivor], (await cluster.StatusAsync(survivor)).Members.Select(m => m.Id));
        var missing = await Verify.MissingAsync(cluster, survivor, acknowledged);
        Assert.True(missing.Count == 0, $"the recovered node lacks {missing.Count} acknowledged writes, e.g. {string.Join(", ", missing.Take(5))}");
        Assert.Null((await cluster.ExecuteAsync(survivor, Commands.Get("never-acknowledged"))).BulkText());
        Assert.True((await cluster.ExecuteAsync(survivor, Commands.Set("after-recovery", "yes"))).Ok);
        acknowledged["after-recovery"] = "yes";

        // Members back, one at a time: new ids, empty data directories, joined as learners, promoted once caught up.
        var members = new List<ulong> { survivor };
        foreach (var id in new ulong[] { 4, 5 })
        {
            var node = cluster.AddJoiningNode(id, reachable: $"{survivor}={cluster[survivor].GrpcUrl}");
            node.Start();
            var add = await Dcachectl.RunAsync(output, ["member", "add", "--id", LocalCluster.Text((int)id), "--address", node.GrpcUrl, .. cluster.CtlOptions(members)]);
            Assert.True(add.Exit == 0, add.ToString());
            await Eventually.WaitAsync(async () =>
            {
                var leaderCommit = (await cluster.StatusAsync(survivor)).CommitIndex;
                return (await cluster.StatusAsync(id)).AppliedIndex >= leaderCommit;
            }, TimeSpan.FromSeconds(30), $"node {id} to catch up");
            Dcachectl.Result promote = null!;
            await Eventually.WaitAsync(async () =>
            {
                promote = await Dcachectl.RunAsync(output, ["member", "promote", "--id", LocalCluster.Text((int)id), .. cluster.CtlOptions(members)]);
                return promote.Exit == 0;
            }, TimeSpan.FromSeconds(30), $"node {id} to be promoted");
            members.Add(id);
        }

        var status = await Dcachectl.RunAsync(output, ["status", .. cluster.CtlOptions(members)]);
        Assert.True(status.Exit == 0, status.ToString());
        Assert.Equal(3, status.Output.Split('\n').Count(line => Regex.IsMatch(line, $@"\s{survivor},4,5\s+-\s*$")));
        foreach (var id in members)
        {
            var lacking = await Verify.MissingAsync(cluster, id, acknowledged);
            Assert.True(lacking.Count == 0, $"node {id} lacks {lacking.Count} acknowledged writes, e.g. {string.Join(", ", lacking.Take(5))}");
        }
    }

    [Fact]
    public async Task EveryCommandReportsAWrongAddressAWrongSecretAndAFileThatIsNotASnapshotClearly()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        var file = Path.Combine(cluster.Root, "backup.dcsnap");
        var unused = $"http://127.0.0.1:{FreePorts.Allocate(1)[0]}";

        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "save", file, "--endpoints", unused, "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret), 1, "cannot reach the node");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "save", file, "--endpoints", cluster[1].GrpcUrl, "--cluster-id", cluster.ClusterId, "--secret", "wrong"), 1, "refused: wrong or missing cluster secret");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "save", file, "--endpoints", cluster[1].GrpcUrl, "--cluster-id", "other", "--secret", LocalCluster.Secret), 1, "refused: wrong cluster id");
        Assert.False(File.Exists(file));
        Assert.False(File.Exists(file + ".tmp"));
        await File.WriteAllTextAsync(file, "precious");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", file, .. cluster.CtlOptions()]), 1, "already exists; a backup never overwrites a file");
        Assert.Equal("precious", await File.ReadAllTextAsync(file));
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", Path.Combine(cluster.Root, "no-such-dir", "b.dcsnap"), .. cluster.CtlOptions()]), 1, "cannot create");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "inspect", "--data", cluster[1].DataDirectory), 1, "is in use by another process (a running node?)");

        var notASnapshot = Path.Combine(cluster.Root, "notes.txt");
        await File.WriteAllTextAsync(notASnapshot, "these are not the bytes you are looking for\n");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", notASnapshot), 1, "is not a Dcache snapshot file");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", Path.Combine(cluster.Root, "missing")), 1, "cannot open");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", ""), 2, "FILE is empty");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", " ", .. cluster.CtlOptions()]), 2, "FILE is empty");
        var target = Path.Combine(cluster.Root, "restore-target");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", notASnapshot, "--data", target, "--node-id", "1", "--cluster-id", "new",
            "--initial-cluster", "1=http://127.0.0.1:1"), 1, "is not a Dcache snapshot file");
        Assert.False(Directory.Exists(target));
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", notASnapshot, "--data", target, "--node-id", "2", "--cluster-id", "new",
            "--initial-cluster", "1=http://127.0.0.1:1"), 2, "must list --node-id 2");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", notASnapshot, "--node-id", "1"), 2, "--data is required");

        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "inspect", "--data", cluster.Root), 1, "holds no node data");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", cluster.Root, "--cluster-id", "new"), 1, "holds no node data");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", cluster.Root), 2, "--cluster-id is required");
    }

    [Fact]
    public async Task ASnapshotLargerThanDcachectlsWholeHeapStreamsThroughIt()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        const int values = 64;
        var value = new string('v', 1 << 20);
        for (var i = 0; i < values; i++)
        {
            Assert.True((await cluster.ExecuteAsync(1, Commands.Set($"big-{i}", value))).Ok);
        }

        // 64 MiB of state through a process whose GC may never hold more than 32 MiB: only streaming gets it through.
        var file = Path.Combine(cluster.Root, "big.dcsnap");
        var save = await Dcachectl.RunWithEnvironmentAsync(output, new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x2000000" },
            ["snapshot", "save", file, .. cluster.CtlOptions()]);
        Assert.True(save.Exit == 0, save.ToString());
        Assert.True(new FileInfo(file).Length > values << 20);
        var verify = await Dcachectl.RunAsync(output, "snapshot", "verify", file);
        Assert.True(verify.Exit == 0, verify.ToString());

        // The limit bites: verify, which decodes the whole state into memory as a node would, cannot run under it.
        var constrained = await Dcachectl.RunWithEnvironmentAsync(output, new Dictionary<string, string> { ["DOTNET_GCHeapHardLimit"] = "0x2000000" },
            "snapshot", "verify", file);
        Assert.NotEqual(0, constrained.Exit);
        Assert.Equal(values, int.Parse(KeysLine().Match(verify.Output).Groups[1].Value, CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task ARestoreCutShortLeavesADirectoryThatNoNodeStartsFrom()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        var backup = await SaveBackupOfEightMiBAsync(cluster);

        // The kernel stops dcachectl (SIGXFSZ) once a file it writes passes 2 MiB: midway through copying 8 MiB of
        // state, as a Ctrl-C, a lost SSH session or a power cut would.
        await using var restored = new LocalCluster(output, size: 1, clusterId: $"restored-cluster-{Guid.NewGuid():N}");
        var data = restored[1].DataDirectory;
        var cut = await Dcachectl.RunUnderFileSizeLimitAsync(output, 2048,
            "snapshot", "restore", backup, "--data", data, "--node-id", "1", "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster);
        Assert.True(cut.Exit != 0, $"the restore was to be cut short: {cut}");

        // What is left must not pass for a node's data: started on it, a node that found no log would found a new,
        // empty cluster under the new id in the backup's place.
        Assert.True(Directory.Exists(data), "the restore was to be cut short once it had begun writing the data directory");
        restored[1].Start();
        await Eventually.WaitAsync(() => Task.FromResult(!restored[1].IsRunning), TimeSpan.FromSeconds(30), "the node on a cut-short restore to refuse to start");
        Assert.Contains("restore", restored[1].RecentOutput(), StringComparison.Ordinal);
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", data, "--node-id", "1",
            "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster), 1, "is not empty");
    }

    /// <summary>
    /// Two restores into one new directory at once: the first is paused (SIGSTOP) while it verifies the backup, after
    /// it found the directory absent; the second restores in full meanwhile; then the first goes on. Exactly one may
    /// succeed, and the loser must leave the winner's directory as it was. Before, the first found the directory free by
    /// its earlier look and restored over the winner's (exit 0 twice); with other ids it failed and left its RESTORING
    /// marker in the winner's directory, or, having found no directory at all, deleted the winner's files.
    /// </summary>
    [Fact]
    public async Task OfTwoRestoresIntoOneNewDirectoryOneSucceedsAndTheOtherTouchesNothing()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        var backup = await SaveBackupOfEightMiBAsync(cluster);

        await using var restored = new LocalCluster(output, size: 1, clusterId: $"restored-cluster-{Guid.NewGuid():N}");
        var data = restored[1].DataDirectory;
        string[] restore = ["snapshot", "restore", backup, "--data", data, "--node-id", "1", "--cluster-id", restored.ClusterId, "--initial-cluster", restored.InitialCluster];
        Dcachectl.Result? winner = null;
        Dictionary<string, long>? winnersFiles = null;
        var loser = await Dcachectl.RunAlongsideAsync(output, async first =>
        {
            await Eventually.WaitAsync(() => Reads(first.Id, backup), TimeSpan.FromSeconds(30), "the first restore to open the backup");
            Signal(first.Id, "STOP");
            try
            {
                Assert.True(Reads(first.Id, backup), "the first restore was to be paused while it reads the backup, before it claims the directory");
                Assert.False(Directory.Exists(data), "the directory was to be absent when the second restore starts");
                winner = await Dcachectl.RunAsync(output, restore);
                winnersFiles = Listing(data);
            }
            finally
            {
                Signal(first.Id, "CONT");
            }
        }, restore);

        Assert.True(winner!.Exit == 0, winner.ToString());
        Dcachectl.AssertFails(loser, 1, "is not empty");
        Assert.Equal(winnersFiles!, Listing(data));
        Assert.False(File.Exists(Path.Combine(data, "RESTORING")));
        restored[1].Start();
        await restored.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(BigValue, (await restored.ExecuteAsync(1, Commands.Get("big-7", ReadConsistency.Local))).BulkText());
    }

    /// <summary>Whether process <paramref name="pid"/> has <paramref name="file"/> open.</summary>
    private static bool Reads(int pid, string file)
    {
        try
        {
            return new DirectoryInfo($"/proc/{pid}/fd").EnumerateFileSystemInfos().Any(fd => fd.LinkTarget == file);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false; // it exited, or a descriptor closed while being read
        }
    }

    private static void Signal(int pid, string signal)
    {
        using var kill = System.Diagnostics.Process.Start("kill", $"-{signal} {pid}");
        kill.WaitForExit();
    }

    /// <summary>Every file under <paramref name="directory"/> (but the lock file, which a refused opener may touch) and its size.</summary>
    private static Dictionary<string, long> Listing(string directory) =>
        Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)
            .Where(path => Path.GetFileName(path) != "LOCK")
            .ToDictionary(path => Path.GetRelativePath(directory, path), path => new FileInfo(path).Length);

    [Fact]
    public async Task ASaveWhoseWritesFailLeavesNoPartialFile()
    {
        await using var cluster = new LocalCluster(output, size: 1);
        await cluster.StartAsync();
        var value = new string('v', 1 << 20);
        for (var i = 0; i < 2; i++)
        {
            Assert.True((await cluster.ExecuteAsync(1, Commands.Set($"big-{i}", value))).Ok);
        }

        // The file being written is a device every write to fails on with "No space left on device", as a full disk does.
        var backup = Path.Combine(cluster.Root, "backup.dcsnap");
        File.CreateSymbolicLink(backup + ".tmp", "/dev/full");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", backup, .. cluster.CtlOptions()]), 1, "No space left on device");
        Assert.False(File.Exists(backup));
        Assert.False(File.Exists(backup + ".tmp") || new FileInfo(backup + ".tmp").LinkTarget is not null, "the save left its temporary file behind");
    }

    private async Task RejectsDamagedCopiesAsync(string backup)
    {
        var original = await File.ReadAllBytesAsync(backup);
        var seed = int.TryParse(Environment.GetEnvironmentVariable("DCACHE_DAMAGE_SEED"), CultureInfo.InvariantCulture, out var fixedSeed) ? fixedSeed : Random.Shared.Next();
        output.WriteLine($"damage seed {seed} (replay with DCACHE_DAMAGE_SEED={seed})");
        var random = new Random(seed);
        // The magic, the version, the header, random places in the data, the trailer's size and the checksum itself.
        var offsets = new[] { 0, 9, 20, original.Length - 5, original.Length - 1 }
            .Concat(Enumerable.Range(0, 4).Select(_ => random.Next(24, original.Length - 16)))
            .ToList();
        var damaged = backup + ".damaged";
        foreach (var offset in offsets)
        {
            var copy = (byte[])original.Clone();
            copy[offset] ^= (byte)(1 << random.Next(8));
            await File.WriteAllBytesAsync(damaged, copy);
            var result = await Dcachectl.RunAsync(output, "snapshot", "verify", damaged);
            Dcachectl.AssertFails(result, 1, offset < 8 ? "is not a Dcache snapshot file" : "is damaged");
        }

        await File.WriteAllBytesAsync(damaged, original.AsSpan(0, original.Length / 2).ToArray());
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", damaged), 1, "truncated");
        File.Delete(damaged);
    }

    /// <summary>The old cluster's nodes still run, but the new cluster refuses their calls: the cluster id differs.</summary>
    private async Task OldClusterIsRefusedAsync(LocalCluster old, LocalCluster restored)
    {
        var oldHeaders = LocalCluster.Headers(old.ClusterId);
        var status = await Assert.ThrowsAsync<RpcException>(() => restored.Client(1).StatusAsync(new StatusRequest(), oldHeaders).ResponseAsync);
        Assert.Equal(Grpc.Core.StatusCode.PermissionDenied, status.StatusCode);

        // A vote request in a far higher term, as an old node would send: refused, and the new cluster's term stays put.
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(restored[2].GrpcUrl);
        var raftHeaders = LocalCluster.Headers(old.ClusterId);
        raftHeaders.Add("dcache-from", "1");
        var refused = await Assert.ThrowsAsync<RpcException>(async () =>
        {
            using var call = new RaftTransport.RaftTransportClient(channel).Send(raftHeaders, DateTime.UtcNow.AddSeconds(5));
            try
            {
                await call.RequestStream.WriteAsync(new RaftMessage { Type = MessageType.Vote, From = 1, To = 2, Term = 1_000_000 });
                await call.RequestStream.CompleteAsync();
            }
            catch (RpcException)
            {
                // The server may refuse the call before the write lands; the call's own status says why.
            }

            await call.ResponseAsync;
        });
        Assert.Equal(Grpc.Core.StatusCode.PermissionDenied, refused.StatusCode);
        foreach (var node in restored.Nodes.Keys)
        {
            Assert.True((await restored.StatusAsync(node)).Term < 1_000_000);
        }
    }

    [GeneratedRegex(@"commit index:\s+(\d+)")]
    private static partial Regex CommitLine();

    [GeneratedRegex(@"last index:\s+(\d+)")]
    private static partial Regex LastIndexLine();

    [GeneratedRegex(@"keys:\s+(\d+)")]
    private static partial Regex KeysLine();

    private static readonly string BigValue = new('v', 1 << 20);

    /// <summary>Starts the one-node <paramref name="cluster"/>, writes 8 values of 1 MiB, and saves a backup of it: large enough to cut a restore short.</summary>
    private async Task<string> SaveBackupOfEightMiBAsync(LocalCluster cluster)
    {
        await cluster.StartAsync();
        for (var i = 0; i < 8; i++)
        {
            Assert.True((await cluster.ExecuteAsync(1, Commands.Set($"big-{i}", BigValue))).Ok);
        }

        var backup = Path.Combine(cluster.Root, "backup.dcsnap");
        var save = await Dcachectl.RunAsync(output, ["snapshot", "save", backup, .. cluster.CtlOptions()]);
        Assert.True(save.Exit == 0, save.ToString());
        return backup;
    }
}
