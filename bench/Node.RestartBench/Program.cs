// Restart benchmark (issue 4): a single-node cluster is loaded with 1,000,000 keys of 100 bytes written as
// 100,000 MSET entries (10 keys each), which triggers a snapshot, then ~99,000 more SET entries stay in the log
// after it. The node is killed with SIGKILL and started again; the figure is the time from process start to the
// first successful linearizable GET, and to the first read that sees the last write. Bounded: fixed entry counts,
// and every wait has a deadline.
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;

var keys = Arg("--keys", 1_000_000);
var logEntries = Arg("--log-entries", 99_000);
var restarts = Arg("--restarts", 3);
const int KeysPerEntry = 10;
var value = ByteString.CopyFrom(new byte[100]);
var snapshotEntries = keys / KeysPerEntry;

var root = Directory.CreateTempSubdirectory("dcache-restart-bench-").FullName;
var ports = FreePorts(2);
var grpcUrl = $"http://127.0.0.1:{ports[0]}";
var headers = new Metadata { { "dcache-cluster-id", "bench" }, { "dcache-secret", "bench" } };
var nodeDll = FindNodeDll();
Process? node = null;
try
{
    node = StartNode();
    using var channel = GrpcChannel.ForAddress(grpcUrl);
    var client = new Cache.CacheClient(channel);
    await WaitForReadAsync(client, TimeSpan.FromSeconds(60));

    var load = Stopwatch.StartNew();
    await RunConcurrentlyAsync(snapshotEntries, 64, async i =>
    {
        var mset = new MSetRequest();
        for (var k = 0; k < KeysPerEntry; k++)
        {
            mset.Keys.Add(ByteString.CopyFromUtf8(Key((i * KeysPerEntry) + k)));
            mset.Values.Add(value);
        }

        await ExpectOk(client.ExecuteOneAsync(new Command { Id = (ulong)i, Mset = mset }, headers));
    });
    Console.WriteLine($"loaded {keys:N0} keys in {snapshotEntries:N0} MSET entries in {load.Elapsed.TotalSeconds:F1} s");

    // The snapshot is taken once SnapshotEntries were applied; wait for it before writing the log tail.
    await WaitUntil(() => Directory.GetFiles(Path.Combine(root, "node1", "snapshots")).Length > 1 && File.ReadAllText(LogPath()).Contains("Snapshot taken", StringComparison.Ordinal), TimeSpan.FromSeconds(120), "the snapshot");
    await RunConcurrentlyAsync(logEntries, 64, async i =>
        await ExpectOk(client.ExecuteOneAsync(new Command { Id = (ulong)i, Set = new SetRequest { Key = ByteString.CopyFromUtf8(Key(i % keys)), Value = ByteString.CopyFromUtf8($"tail-{i}") } }, headers)));
    Console.WriteLine($"then {logEntries:N0} SET entries after the snapshot; total {load.Elapsed.TotalSeconds:F1} s");

    var lastKey = Key((logEntries - 1) % keys);
    var lastValue = $"tail-{logEntries - 1}";
    var results = new List<(double FirstRead, double LastWrite)>();
    for (var run = 1; run <= restarts; run++)
    {
        node.Kill(entireProcessTree: true);
        await node.WaitForExitAsync();
        var clock = Stopwatch.StartNew();
        node = StartNode();
        await WaitForReadAsync(client, TimeSpan.FromSeconds(120));
        var firstRead = clock.Elapsed.TotalSeconds;
        await WaitUntilAsync(async () => (await client.ExecuteOneAsync(new Command { Get = new GetRequest { Key = ByteString.CopyFromUtf8(lastKey) } }, headers)).Bulk.ToStringUtf8() == lastValue, TimeSpan.FromSeconds(60), "the last write");
        results.Add((firstRead, clock.Elapsed.TotalSeconds));
        var dbsize = (await client.ExecuteOneAsync(new Command { Dbsize = new DbSizeRequest() }, headers)).Integer;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"restart {run}: first linearizable read after {firstRead:F2} s, last write visible after {clock.Elapsed.TotalSeconds:F2} s, {dbsize:N0} keys"));
    }

    var median = results.Select(r => r.FirstRead).Order().ElementAt(results.Count / 2);
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"median time from process start to serving reads: {median:F2} s (target < 5 s)"));
    Console.WriteLine("node log (restart lines):");
    foreach (var line in File.ReadLines(LogPath()).Where(l => l.Contains("started:", StringComparison.Ordinal) || l.Contains("Loaded snapshot", StringComparison.Ordinal) || l.Contains("opened", StringComparison.Ordinal)).TakeLast(6))
    {
        Console.WriteLine("  " + line);
    }
}
finally
{
    node?.Kill(entireProcessTree: true);
    node?.WaitForExit();
    Directory.Delete(root, recursive: true);
}

return 0;

Process StartNode()
{
    var info = new ProcessStartInfo("dotnet") { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
    info.ArgumentList.Add(nodeDll);
    foreach (var arg in new[]
    {
        "--Dcache:Node:NodeId=1", "--Dcache:Node:ClusterId=bench", "--Dcache:Node:ClusterSecret=bench",
        $"--Dcache:Node:DataDirectory={Path.Combine(root, "node1")}", $"--Dcache:Node:GrpcUrl={grpcUrl}",
        $"--Dcache:Node:HttpUrl=http://127.0.0.1:{ports[1]}", $"--Dcache:Node:InitialCluster=1={grpcUrl}",
        $"--Dcache:Node:SnapshotEntries={snapshotEntries}",
    })
    {
        info.ArgumentList.Add(arg);
    }

    var process = Process.Start(info)!;
    var log = new StreamWriter(LogPath(), append: true) { AutoFlush = true };
    process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (log) { log.WriteLine(e.Data); } } };
    process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (log) { log.WriteLine(e.Data); } } };
    process.Exited += (_, _) => { lock (log) { log.Dispose(); } };
    process.EnableRaisingEvents = true;
    process.BeginOutputReadLine();
    process.BeginErrorReadLine();
    return process;
}

string LogPath() => Path.Combine(root, "node.log");

async Task WaitForReadAsync(Cache.CacheClient client, TimeSpan timeout) =>
    await WaitUntilAsync(async () =>
    {
        var reply = await client.ExecuteOneAsync(new Command { Get = new GetRequest { Key = ByteString.CopyFromUtf8("probe") } }, headers, DateTime.UtcNow.AddSeconds(2));
        return reply.ResultCase is Reply.ResultOneofCase.Nil or Reply.ResultOneofCase.Bulk;
    }, timeout, "a linearizable read");

static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
{
    var clock = Stopwatch.StartNew();
    while (clock.Elapsed < timeout)
    {
        try
        {
            if (await condition())
            {
                return;
            }
        }
        catch (RpcException)
        {
        }

        await Task.Delay(10);
    }

    throw new TimeoutException($"timed out waiting for {what}");
}

static Task WaitUntil(Func<bool> condition, TimeSpan timeout, string what) => WaitUntilAsync(() => Task.FromResult(condition()), timeout, what);

static async Task ExpectOk(AsyncUnaryCall<Reply> call)
{
    var reply = await call;
    if (reply.ResultCase != Reply.ResultOneofCase.Ok)
    {
        throw new InvalidOperationException($"write failed: {reply}");
    }
}

static async Task RunConcurrentlyAsync(int count, int concurrency, Func<int, Task> action)
{
    var next = -1;
    await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
    {
        int i;
        while ((i = Interlocked.Increment(ref next)) < count)
        {
            await action(i);
        }
    }));
}

static string Key(int i) => $"key:{i:D7}";

int Arg(string name, int fallback)
{
    var index = Array.IndexOf(args, name);
    return index >= 0 && index + 1 < args.Length ? int.Parse(args[index + 1], CultureInfo.InvariantCulture) : fallback;
}

static int[] FreePorts(int count)
{
    var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
    listeners.ForEach(l => l.Start());
    var result = listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
    listeners.ForEach(l => l.Stop());
    return result;
}

static string FindNodeDll()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        var candidate = Path.Combine(dir.FullName, "src", "Node", "bin", "Release", "net10.0", "Dcache.Node.dll");
        if (File.Exists(candidate))
        {
            return candidate;
        }
    }

    throw new FileNotFoundException("build the solution in Release first: Dcache.Node.dll not found");
}
