using System.Net;
using System.Net.Sockets;
using Dcache.Integration.Tests.Support;

namespace Dcache.Chaos;

/// <summary>
/// A <see cref="LinkProxy"/> on every directed link between the nodes of a <see cref="LocalCluster"/>, installed
/// through <see cref="LocalCluster.InitialClusterOf"/> before the nodes start, and one from the gateway to each node,
/// installed through <see cref="LocalCluster.GatewayAddressOf"/>. The gateway also learns addresses from the nodes
/// (the leader's member list, leader hints), which are the node-to-node proxies, or for a node's own address the
/// gateway's proxy to it (a node lists itself there); a connection the gateway opens at a node-to-node proxy still
/// travels the gateway's link to that node (the proxy asks <see cref="SocketOwner"/> who connected), so cutting the
/// gateway off from a node cuts every way it has to it, and a cut between nodes never cuts the gateway.
/// </summary>
internal sealed class ProxyMesh : IAsyncDisposable
{
    /// <summary>Source id of the gateway's proxies.</summary>
    public const ulong Gateway = ulong.MaxValue;

    private readonly Dictionary<(ulong From, ulong To), LinkProxy> _links = [];

    /// <summary>The gateway's link to each node, shared by every proxy that leads to it.</summary>
    private readonly Dictionary<ulong, Link> _gatewayLinks = [];

    /// <summary>Source id of a joined node's inbound proxy, which every other node shares.</summary>
    private const ulong AnyNode = 0;

    private readonly LocalCluster _cluster;
    private readonly ulong[] _founders;
    private readonly List<ulong> _joiners = [];

    public ProxyMesh(LocalCluster cluster)
    {
        _cluster = cluster;
        _founders = [.. cluster.Nodes.Keys];
        foreach (var to in _founders)
        {
            AddGatewayLink(to);
            foreach (var from in _founders.Where(from => from != to))
            {
                _links[(from, to)] = NodeLink(from, to);
            }
        }

        // A node lists itself at the gateway's proxy to it, since that entry only serves to tell others (its status,
        // which the gateway polls, names its own address): it never connects to itself.
        cluster.InitialClusterOf = self => string.Join(",", _founders.Select(id =>
            $"{id}={(id == self ? _links[(Gateway, id)].Url : _links[(self, id)].Url)}"));
        cluster.GatewayAddressOf = id => _links[(Gateway, id)].Url;
    }

    private void AddGatewayLink(ulong to)
    {
        var link = new Link();
        _gatewayLinks[to] = link;
        _links[(Gateway, to)] = new LinkProxy(Gateway, to, _cluster[to].GrpcPort, own: link);
    }

    /// <summary>A proxy for node traffic towards <paramref name="to"/> that hands the gateway's connections to the gateway's link.</summary>
    private LinkProxy NodeLink(ulong from, ulong to) =>
        new(from, to, _cluster[to].GrpcPort, linkOf: socket => OpenedByGateway(socket) ? _gatewayLinks[to] : null);

    private bool OpenedByGateway(Socket accepted) =>
        _cluster.Gateway is { IsRunning: true, ProcessId: { } pid }
        && accepted.RemoteEndPoint is IPEndPoint client
        && accepted.LocalEndPoint is IPEndPoint listener
        && SocketOwner.Opened(pid, client.Port, listener.Port);

    /// <summary>
    /// Proxies for a node that joins later (defined in the cluster with <see cref="LocalCluster.AddJoiningNode"/>):
    /// its own links to the founders, and one inbound proxy that every other node reaches it through, since the
    /// address a member is added with travels through the log and is the same for all. Returns that address.
    /// </summary>
    public string AddJoiner(ulong id)
    {
        foreach (var founder in _founders)
        {
            _links[(id, founder)] = NodeLink(id, founder);
        }

        AddGatewayLink(id);

        // It must be able to answer whichever member leads, so it lists every node that may be a member by then:
        // the founders through its own links, earlier joiners through their shared inbound proxies.
        var reachable = _founders.Select(f => $"{f}={_links[(id, f)].Url}")
            .Concat(_joiners.Select(j => $"{j}={_links[(AnyNode, j)].Url}"))
            .ToList();
        _links[(AnyNode, id)] = NodeLink(AnyNode, id);
        _joiners.Add(id);
        _cluster.SetReachable(id, string.Join(",", reachable));
        return _links[(AnyNode, id)].Url;
    }

    public IEnumerable<LinkProxy> Links => _links.Values;

    /// <summary>Cuts the traffic node <paramref name="from"/> sends to node <paramref name="to"/> (only that direction).</summary>
    /// <remarks>Traffic to a joined node from any other node shares one proxy: cutting it cuts them all.</remarks>
    public void Cut(ulong from, ulong to) => (_links.GetValueOrDefault((from, to)) ?? _links[(AnyNode, to)]).Cut();

    /// <summary>Cuts every link between the two sides, in both directions.</summary>
    public void Partition(IReadOnlyCollection<ulong> side, IReadOnlyCollection<ulong> otherSide)
    {
        foreach (var a in side)
        {
            foreach (var b in otherSide)
            {
                Cut(a, b);
                Cut(b, a);
            }
        }
    }

    /// <summary>
    /// Cuts <paramref name="node"/> off from <paramref name="others"/> without touching links between third parties:
    /// everything they send it, and what it sends them over links of its own. What it sends to a joined node stays
    /// up, since that travels through the joined node's shared inbound proxy and cutting it would cut everyone.
    /// </summary>
    public void Isolate(ulong node, IEnumerable<ulong> others)
    {
        foreach (var other in others.Where(other => other != node))
        {
            Cut(other, node);
            if (_links.TryGetValue((node, other), out var own))
            {
                own.Cut();
            }
        }
    }

    /// <summary>Cuts the gateway off from <paramref name="nodes"/>, both directions, at whichever of their addresses it uses.</summary>
    public void CutGateway(IEnumerable<ulong> nodes)
    {
        foreach (var node in nodes)
        {
            _gatewayLinks[node].Cut();
        }
    }

    public void HealAll()
    {
        foreach (var link in _links.Values)
        {
            link.Heal();
        }
    }

    public string DescribeCuts()
    {
        var cut = _links.Values.Where(l => l.IsCut).Select(l => $"{l.From switch { AnyNode => "*", Gateway => "gateway", var id => id.ToString(System.Globalization.CultureInfo.InvariantCulture) }}->{l.To}").ToList();
        return cut.Count == 0 ? "none" : string.Join(" ", cut);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var link in _links.Values)
        {
            await link.DisposeAsync().ConfigureAwait(false);
        }
    }
}
