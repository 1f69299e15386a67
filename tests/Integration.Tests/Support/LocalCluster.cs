using System.Collections.Concurrent;
using System.Globalization;
using Dcache.Protocol.Cache;
using Grpc.Core;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// A cluster of real node processes on 127.0.0.1 with ephemeral ports and data under a temp directory. Disposing
/// kills every process and deletes the directory, also when the test failed; node output goes to the test log.
/// </summary>
internal sealed class LocalCluster : IAsyncDisposable
{
    public const string Secret = "test-secret";

    private readonly ITestOutputHelper _output;
    private readonly Dictionary<ulong, GrpcChannel> _channels = [];

    // The chaos suite's overlapping faults call Client from two tasks at once, one of which may be moving a node.
    private readonly Lock _channelsLock = new();
    private readonly Dictionary<string, string> _settings;
    private readonly Dictionary<ulong, Dictionary<string, string>> _nodeSettings = [];
    // Nodes started to join the running cluster, and the InitialCluster each is started with. Concurrent: the chaos
    // suite changes a joiner's list when a node moves (ProxyMesh.Move) while another task may be starting a node.
    private readonly ConcurrentDictionary<ulong, string> _joiners = new();
    private List<string>? _gatewayArguments;

    public LocalCluster(ITestOutputHelper output, int size = 3, IReadOnlyDictionary<string, string>? settings = null, string? clusterId = null)
    {
        _output = output;
        // Unique unless a test names one: test classes run in parallel, and a node of another test's cluster that still
        // dials an address this cluster's node now has (its peer moved, or stopped, and the port was handed out again)
        // must be refused by the cluster-id check, not taken for a member (node 1 of EntryFormatTests once got such a
        // heartbeat, commit index 4 against its last index 3, and stopped).
        ClusterId = clusterId ?? $"test-cluster-{Guid.NewGuid():N}";
        _settings = new Dictionary<string, string>(settings ?? new Dictionary<string, string>());
        Root = Directory.CreateTempSubdirectory("dcache-it-").FullName;
        var ports = FreePorts.Allocate(size * 2);
        for (var i = 0; i < size; i++)
        {
            var id = (ulong)(i + 1);
            Nodes[id] = new NodeProcess(id, ports[2 * i], ports[(2 * i) + 1], Path.Combine(Root, $"node{id}"), Arguments);
        }

        InitialCluster = string.Join(",", Nodes.Values.Select(n => $"{n.Id}={n.GrpcUrl}"));
    }

    public string Root { get; }

    /// <summary>Used by nodes started from now on and by this object's calls; changed when a test moves the nodes to a new cluster.</summary>
    public string ClusterId { get; set; }

    public string InitialCluster { get; }

    public SortedDictionary<ulong, NodeProcess> Nodes { get; } = [];

    /// <summary>
    /// The InitialCluster one node is started with, when it must differ from <see cref="InitialCluster"/> (the chaos
    /// suite lists each peer at the proxy of the link to it); set before the nodes start.
    /// </summary>
    public Func<ulong, string>? InitialClusterOf { get; set; }

    /// <summary>
    /// The address the gateway is given for a node, when it must differ from the node's own (the chaos suite reaches
    /// each node from the gateway through a proxy of its own); set before the gateway starts.
    /// </summary>
    public Func<ulong, string>? GatewayAddressOf { get; set; }

    public NodeProcess this[ulong id] => Nodes[id];

    /// <summary>The InitialCluster node <paramref name="id"/> is given when it starts next.</summary>
    public string InitialClusterAtStart(ulong id) =>
        _joiners.TryGetValue(id, out var reachable) ? reachable : InitialClusterOf?.Invoke(id) ?? InitialCluster;

    private IReadOnlyList<string> Arguments(ulong id)
    {
        var node = Nodes[id];
        var args = new List<string>
        {
            $"--Dcache:Node:NodeId={id}",
            $"--Dcache:Node:ClusterId={ClusterId}",
            $"--Dcache:Node:ClusterSecret={Secret}",
            $"--Dcache:Node:DataDirectory={node.DataDirectory}",
            $"--Dcache:Node:GrpcUrl={node.GrpcUrl}",
            $"--Dcache:Node:HttpUrl=http://127.0.0.1:{node.HttpPort}",
            $"--Dcache:Node:InitialCluster={InitialClusterAtStart(id)}",
        };
        if (_joiners.ContainsKey(id))
        {
            args.Add("--Dcache:Node:Join=true");
        }

        args.AddRange(_settings.Select(kv => $"--Dcache:Node:{kv.Key}={kv.Value}"));
        if (_nodeSettings.TryGetValue(id, out var own))
        {
            // Later arguments win: this node's own settings over the cluster's.
            args.AddRange(own.Select(kv => $"--Dcache:Node:{kv.Key}={kv.Value}"));
        }

        return args;
    }

    /// <summary>Gives node <paramref name="id"/> a setting of its own from its next start on (null: the cluster's again).</summary>
    public void SetNodeSetting(ulong id, string key, string? value)
    {
        var own = _nodeSettings.TryGetValue(id, out var existing) ? existing : _nodeSettings[id] = [];
        if (value is null)
        {
            own.Remove(key);
        }
        else
        {
            own[key] = value;
        }
    }

    /// <summary>
    /// Defines (does not start) a node that joins the running cluster: an empty data directory, Join=true, and the
    /// founding members as the members it can reach (or <paramref name="reachable"/>). The leader must add it.
    /// </summary>
    public NodeProcess AddJoiningNode(ulong id, string? reachable = null)
    {
        var ports = FreePorts.Allocate(2);
        _joiners[id] = reachable ?? InitialCluster;
        var node = new NodeProcess(id, ports[0], ports[1], Path.Combine(Root, $"node{id}"), Arguments);
        Nodes[id] = node;
        return node;
    }

    /// <summary>
    /// Gives stopped node <paramref name="id"/> new ports, as on a host whose address changed: the same id and data
    /// directory, and every node's InitialCluster still names its old address. Start it again with its Start().
    /// </summary>
    public async Task<NodeProcess> MoveNodeAsync(ulong id)
    {
        var old = Nodes[id];
        if (old.IsRunning)
        {
            throw new InvalidOperationException($"node {id} must be stopped before it moves");
        }

        var ports = FreePorts.Allocate(2);
        var moved = new NodeProcess(id, ports[0], ports[1], old.DataDirectory, Arguments);
        Nodes[id] = moved;
        _output.WriteLine($"===== node {id} at {old.GrpcUrl} (last lines), now moving to {moved.GrpcUrl} =====");
        _output.WriteLine(old.RecentOutput());
        await old.DisposeAsync().ConfigureAwait(false);
        GrpcChannel? channel;
        lock (_channelsLock)
        {
            _channels.Remove(id, out channel);
        }

        channel?.Dispose();

        return moved;
    }

    /// <summary>Changes the InitialCluster a joined node is started with next time (e.g. to none, to show it finds its peers without it).</summary>
    public void SetReachable(ulong id, string reachable) => _joiners[id] = reachable;

    /// <summary>The --endpoints, --cluster-id and --secret options of dcachectl for these nodes (default: all).</summary>
    public string[] CtlOptions(IEnumerable<ulong>? nodes = null, string? secret = null) =>
        ["--endpoints", string.Join(",", (nodes ?? Nodes.Keys).Select(id => Nodes[id].GrpcUrl)), "--cluster-id", ClusterId, "--secret", secret ?? Secret];

    /// <summary>The gateway process, once <see cref="StartGatewayAsync"/> ran.</summary>
    public ChildProcess? Gateway { get; private set; }

    public int GatewayPort { get; private set; }

    public int GatewayHttpPort { get; private set; }

    /// <summary>Starts a gateway in front of the nodes and waits until it answers PING (NOAUTH, when it requires a password).</summary>
    public async Task StartGatewayAsync(IReadOnlyDictionary<string, string>? settings = null)
    {
        var ports = FreePorts.Allocate(2);
        GatewayPort = ports[0];
        GatewayHttpPort = ports[1];
        Gateway = new ChildProcess("gateway", RepoPaths.GatewayDll);
        var args = new List<string>
        {
            $"--Dcache:Gateway:Port={GatewayPort}",
            $"--Dcache:Gateway:HttpUrl=http://127.0.0.1:{ports[1]}",
            $"--Dcache:Gateway:Cluster:Nodes={string.Join(",", Nodes.Values.Select(n => GatewayAddressOf?.Invoke(n.Id) ?? n.GrpcUrl))}",
            $"--Dcache:Gateway:Cluster:ClusterId={ClusterId}",
            $"--Dcache:Gateway:Cluster:ClusterSecret={Secret}",
        };
        args.AddRange((settings ?? new Dictionary<string, string>()).Select(kv => $"--Dcache:Gateway:{kv.Key}={kv.Value}"));
        _gatewayArguments = args;
        Gateway.Start(args);
        await Eventually.WaitAsync(async () =>
        {
            using var client = new System.Net.Sockets.TcpClient();
            await client.ConnectAsync(System.Net.IPAddress.Loopback, GatewayPort).ConfigureAwait(false);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray()).ConfigureAwait(false);
            var buffer = new byte[16];
            var read = await stream.ReadAsync(buffer).ConfigureAwait(false);
            var reply = System.Text.Encoding.ASCII.GetString(buffer, 0, read);
            return reply == "+PONG\r\n" || reply.StartsWith("-NOAUTH", StringComparison.Ordinal);
        }, TimeSpan.FromSeconds(30), "the gateway to answer PING").ConfigureAwait(false);
    }

    /// <summary>Starts the gateway again (after it was killed) with the settings and ports it had; does not wait for it.</summary>
    public void RestartGateway() =>
        Gateway!.Start(_gatewayArguments ?? throw new InvalidOperationException("the gateway was never started"));

    public async Task StartAsync()
    {
        foreach (var node in Nodes.Values)
        {
            node.Start();
        }

        await WaitForLeaderAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
    }

    public Cache.CacheClient Client(ulong id)
    {
        GrpcChannel? channel;
        lock (_channelsLock)
        {
            if (!_channels.TryGetValue(id, out channel))
            {
                channel = GrpcChannel.ForAddress(Nodes[id].GrpcUrl);
                _channels[id] = channel;
            }
        }

        return new Cache.CacheClient(channel);
    }

    public static Metadata Headers(string clusterId = "test-cluster", string secret = Secret) =>
        new() { { "dcache-cluster-id", clusterId }, { "dcache-secret", secret } };

    public Metadata Auth => Headers(ClusterId);

    public async Task<NodeStatus> StatusAsync(ulong id, bool digest = false) =>
        await Client(id).StatusAsync(new StatusRequest { IncludeDigest = digest }, Auth, DateTime.UtcNow.AddSeconds(5)).ConfigureAwait(false);

    /// <summary>Waits until every running node agrees on one leader; returns its id.</summary>
    public async Task<ulong> WaitForLeaderAsync(TimeSpan timeout)
    {
        ulong leader = 0;
        await Eventually.WaitAsync(async () =>
        {
            var running = Nodes.Values.Where(n => n.IsRunning).ToList();
            var statuses = await Task.WhenAll(running.Select(n => StatusAsync(n.Id))).ConfigureAwait(false);
            var leaders = statuses.Select(s => s.LeaderId).Distinct().ToList();
            if (leaders is [var only] && only != 0 && statuses.Any(s => s.NodeId == only && s.Role == "Leader"))
            {
                leader = only;
                return true;
            }

            return false;
        }, timeout, "one leader that every running node follows").ConfigureAwait(false);
        return leader;
    }

    /// <summary>
    /// Runs <paramref name="command"/> at <paramref name="leader"/>, following the leader's hint if leadership has moved
    /// (a pause of a loaded machine can outlast the election timeout); returns the first reply that is not NotLeader,
    /// and the node that gave it. Only NotLeader, which says the command was not applied, is retried: any command, INCR
    /// included, applies at most once.
    /// </summary>
    public async Task<(ulong Node, Reply Reply)> ExecuteFollowingTheLeaderAsync(ulong leader, Command command, TimeSpan patience)
    {
        var deadline = DateTime.UtcNow + patience;
        while (true)
        {
            var reply = await ExecuteAsync(leader, command).ConfigureAwait(false);
            if (reply.Failure is not { Kind: FailureKind.NotLeader } failure || DateTime.UtcNow >= deadline)
            {
                return (leader, reply);
            }

            if (failure.LeaderId != 0)
            {
                leader = failure.LeaderId;
            }
            else
            {
                // An election is under way: ask again shortly.
                await Task.Delay(50).ConfigureAwait(false);
            }
        }
    }

    public async Task<Reply> ExecuteAsync(ulong node, Command command, TimeSpan? timeout = null) =>
        await Client(node).ExecuteOneAsync(command, Auth, DateTime.UtcNow.Add(timeout ?? TimeSpan.FromSeconds(10))).ConfigureAwait(false);

    public async ValueTask DisposeAsync()
    {
        foreach (var channel in _channels.Values)
        {
            channel.Dispose();
        }

        if (Gateway is not null)
        {
            _output.WriteLine("===== gateway (last lines) =====");
            _output.WriteLine(Gateway.RecentOutput());
            await Gateway.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var node in Nodes.Values)
        {
            _output.WriteLine($"===== node {node.Id} (last lines) =====");
            _output.WriteLine(node.RecentOutput());
            await node.DisposeAsync().ConfigureAwait(false);
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    public static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
