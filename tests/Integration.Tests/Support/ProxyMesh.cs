using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Dcache.TestSupport.Network;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// A <see cref="LinkProxy"/> on every directed link between the nodes of a <see cref="LocalCluster"/>, installed
/// through <see cref="LocalCluster.InitialClusterOf"/> before the nodes start, and one from the gateway to each node,
/// installed through <see cref="LocalCluster.GatewayAddressOf"/>. The gateway also learns addresses from the nodes
/// (the leader's member list, leader hints), which are the node-to-node proxies, or for a node's own address the
/// gateway's proxy to it (a node lists itself there); a connection the gateway opens at a node-to-node proxy still
/// travels the gateway's link to that node (the proxy asks <see cref="SocketOwner"/> who connected), so cutting the
/// gateway off from a node cuts every way it has to it, and a cut between nodes never cuts the gateway.
/// A node that joins later, or moves to a new address, is reached by every other node at the one address the log
/// gives: its proxy there (<see cref="Inbound"/>) asks who connected and puts each node's connections on that node's
/// link to it, so cuts stay per directed link whatever the addresses.
/// </summary>
internal sealed class ProxyMesh : IAsyncDisposable
{
    /// <summary>Source id of the gateway's proxies.</summary>
    public const ulong Gateway = ulong.MaxValue;

    /// <summary>Source id of a shared inbound proxy, which every other node reaches its node through.</summary>
    private const ulong AnyNode = 0;

    /// <summary>
    /// Every directed link's state, whichever proxies carry it: (node, node) and (<see cref="Gateway"/>, node). Concurrent:
    /// an inbound proxy's accepting thread may add the link of a node that connects for the first time.
    /// </summary>
    private readonly ConcurrentDictionary<(ulong From, ulong To), Link> _links = new();

    /// <summary>Proxies at the addresses the nodes' and the gateway's configuration lists (until their node moves).</summary>
    private readonly Dictionary<(ulong From, ulong To), LinkProxy> _configured = [];

    /// <summary>Each joined or moved node's proxy at the address the log gives for it.</summary>
    private readonly Dictionary<ulong, LinkProxy> _inbound = [];

    /// <summary>Proxies at addresses a node moved away from, kept (closing every connection) until the end of the run.</summary>
    private readonly List<LinkProxy> _retired = [];

    private readonly LocalCluster _cluster;
    private readonly ulong[] _founders;

    // Every node of the run, founders and joiners, all defined before any node starts (the proxies' threads read it).
    private readonly List<ulong> _nodes = [];
    private readonly List<ulong> _joiners = [];
    private readonly Lock _moving = new();
    private readonly Dictionary<ulong, string> _initialCluster = [];

    // The address the gateway is configured with for each node, joiners too (defined before it starts), fixed as the
    // InitialClusters are: a node that moves later is found through the leader's member list.
    private readonly Dictionary<ulong, string> _gatewayAddresses = [];

    /// <summary>
    /// Thread-pool workers this process starts on demand without delay. Every link of the cluster is relayed by this
    /// process's pool (two pumps per connection), so a pool that stands still is a network that stops everywhere at
    /// once. With the default minimum (one worker per core), on two cores that the nodes saturate, the pool stood still
    /// for 0.5-1.0 s at a time with work queued while this process used almost no CPU: the leader's heartbeats reached
    /// both followers together up to a second late, and the leader, hearing no follower for that long, stepped down
    /// (docs/robustness.md, StalledLinkTests). With this minimum it never stood still for more than 160 ms; runs used up
    /// to 18 workers.
    /// </summary>
    private const int RelayWorkers = 64;

    /// <param name="oneAddressPerNode">
    /// Every node and the gateway reach each node at one address, as in a deployment, through its inbound proxy (which
    /// still puts each connection on its opener's link): so the gateway knows each node under one address only. Without
    /// it the gateway also learns the node-to-node proxies' addresses from the nodes, one connection (and one circuit
    /// breaker) per address.
    /// </param>
    public ProxyMesh(LocalCluster cluster, bool oneAddressPerNode = false)
    {
        ThreadPool.GetMinThreads(out var workers, out var completionPorts);
        ThreadPool.SetMinThreads(Math.Max(workers, RelayWorkers), completionPorts);
        _cluster = cluster;
        _founders = [.. cluster.Nodes.Keys];
        _nodes.AddRange(_founders);
        foreach (var to in _founders)
        {
            AddGatewayLink(to);
            foreach (var from in _founders.Where(from => from != to))
            {
                _configured[(from, to)] = NodeLink(from, to);
            }
        }

        // A node lists itself at the gateway's proxy to it, since that entry only serves to tell others (its status,
        // which the gateway polls, names its own address): it never connects to itself. Fixed here, as a node's
        // configuration file would be: a node that moves later is found through the log, not through this list.
        foreach (var self in _founders)
        {
            _initialCluster[self] = string.Join(",", _founders.Select(id =>
                $"{id}={(id == self ? _configured[(Gateway, id)].Url : _configured[(self, id)].Url)}"));
        }

        if (oneAddressPerNode)
        {
            foreach (var to in _founders)
            {
                _inbound[to] = Inbound(to);
                _gatewayAddresses[to] = _inbound[to].Url;
            }

            foreach (var self in _founders)
            {
                _initialCluster[self] = string.Join(",", _founders.Select(id => $"{id}={_inbound[id].Url}"));
            }
        }

        cluster.InitialClusterOf = self => _initialCluster[self];
        cluster.GatewayAddressOf = id => _gatewayAddresses[id];
    }

    private Link LinkOf(ulong from, ulong to) => _links.GetOrAdd((from, to), _ => new Link());

    private void AddGatewayLink(ulong to)
    {
        _configured[(Gateway, to)] = new LinkProxy(Gateway, to, _cluster[to].GrpcPort, own: LinkOf(Gateway, to));
        _gatewayAddresses[to] = _configured[(Gateway, to)].Url;
    }

    /// <summary>A proxy for node traffic towards <paramref name="to"/> that hands the gateway's connections to the gateway's link.</summary>
    private LinkProxy NodeLink(ulong from, ulong to)
    {
        var gateway = LinkOf(Gateway, to);
        return new(from, to, _cluster[to].GrpcPort, own: LinkOf(from, to), linkOf: socket => Owner(socket, []) == Gateway ? gateway : null);
    }

    /// <summary>
    /// The proxy every other node (and the gateway, once it learns the address) reaches <paramref name="to"/> through
    /// at its address from the log: each connection goes on its opener's link to <paramref name="to"/>. One opened
    /// by none of them (the harness's own calls) goes on a link of its own that is never cut.
    /// </summary>
    private LinkProxy Inbound(ulong to) =>
        new(AnyNode, to, _cluster[to].GrpcPort, linkOf: socket => Owner(socket, _nodes.Where(id => id != to)) is { } from ? LinkOf(from, to) : null);

    /// <summary>Who opened an accepted connection: the gateway, one of <paramref name="nodes"/>, or (null) someone else.</summary>
    private ulong? Owner(Socket accepted, IEnumerable<ulong> nodes)
    {
        if (accepted.RemoteEndPoint is not IPEndPoint client || accepted.LocalEndPoint is not IPEndPoint listener)
        {
            return null;
        }

        var candidates = new Dictionary<int, ulong>();
        if (_cluster.Gateway is { IsRunning: true, ProcessId: { } gatewayPid })
        {
            candidates[gatewayPid] = Gateway;
        }

        foreach (var node in nodes.Select(id => _cluster[id]))
        {
            if (node is { IsRunning: true, ProcessId: { } pid })
            {
                candidates[pid] = node.Id;
            }
        }

        return candidates.Count > 0 && SocketOwner.OwnerOf(candidates.Keys, client.Port, listener.Port) is { } owner ? candidates[owner] : null;
    }

    /// <summary>
    /// Proxies for a node that joins later (defined in the cluster with <see cref="LocalCluster.AddJoiningNode"/>):
    /// its own links to the founders, the gateway's, and the one every other node reaches it through, since the
    /// address a member is added with travels through the log and is the same for all. Returns that address.
    /// </summary>
    public string AddJoiner(ulong id)
    {
        foreach (var founder in _founders)
        {
            _configured[(id, founder)] = NodeLink(id, founder);
        }

        AddGatewayLink(id);
        _nodes.Add(id);
        _joiners.Add(id);
        _inbound[id] = Inbound(id);
        SetJoinersReachable();
        return _inbound[id].Url;
    }

    /// <summary>
    /// Gives every joiner the InitialCluster an operator would write when starting it now. It must be able to answer
    /// whichever member leads, so it lists every node that may be a member by then, once each, where that node is now:
    /// the founders that never moved through its own links, and any node with an inbound proxy (a joiner, a node that
    /// moved, or every node when each has one address) through that. Joiners are defined when the run begins, before
    /// any node moves, so a move brings them up to date: a joiner listing a moved node at its abandoned proxy could
    /// never answer it before learning the move from the log it cannot receive without answering (seed 758302, whose
    /// joiner's replies to the moved leader went to a retired proxy for 60 s).
    /// </summary>
    private void SetJoinersReachable()
    {
        foreach (var joiner in _joiners)
        {
            var reachable = new SortedDictionary<ulong, string>();
            foreach (var founder in _founders)
            {
                if (_configured.TryGetValue((joiner, founder), out var own))
                {
                    reachable[founder] = own.Url;
                }
            }

            foreach (var (node, proxy) in _inbound.Where(inbound => inbound.Key != joiner))
            {
                reachable[node] = proxy.Url;
            }

            _cluster.SetReachable(joiner, string.Join(",", reachable.Select(node => $"{node.Key}={node.Value}")));
        }
    }

    /// <summary>
    /// After node <paramref name="id"/> moved to new ports (<see cref="LocalCluster.MoveNodeAsync"/>): the addresses
    /// the others' configuration and the gateway's list give for it are abandoned, and it gets a proxy at a new
    /// address, the one the cluster is to be told and every joiner lists from its next start on. Its links keep their
    /// state: a cut towards it still holds there. Returns the new address.
    /// </summary>
    public string Move(ulong id)
    {
        // Two operators may move two nodes at once.
        using var moving = _moving.EnterScope();
        foreach (var key in _configured.Keys.Where(key => key.To == id).ToList())
        {
            _configured.Remove(key, out var abandoned);
            abandoned!.Retire();
            _retired.Add(abandoned);
        }

        if (_inbound.Remove(id, out var previous))
        {
            previous.Retire();
            _retired.Add(previous);
        }

        _inbound[id] = Inbound(id);
        SetJoinersReachable();
        return _inbound[id].Url;
    }

    /// <summary>Cuts the traffic node <paramref name="from"/> sends to node <paramref name="to"/> (only that direction); returns the link, for <see cref="Heal"/>.</summary>
    public (ulong From, ulong To) Cut(ulong from, ulong to)
    {
        LinkOf(from, to).Cut();
        return (from, to);
    }

    /// <summary>Cuts every link between the two sides, in both directions; returns the links cut, for <see cref="Heal"/>.</summary>
    public List<(ulong From, ulong To)> Partition(IReadOnlyCollection<ulong> side, IReadOnlyCollection<ulong> otherSide)
    {
        var cut = new List<(ulong From, ulong To)>();
        foreach (var a in side)
        {
            foreach (var b in otherSide)
            {
                cut.Add(Cut(a, b));
                cut.Add(Cut(b, a));
            }
        }

        return cut;
    }

    /// <summary>Cuts <paramref name="node"/> off from <paramref name="others"/>, both directions, without touching links between third parties.</summary>
    public List<(ulong From, ulong To)> Isolate(ulong node, IEnumerable<ulong> others) => Partition([node], others.Where(other => other != node).ToList());

    /// <summary>Cuts the gateway off from <paramref name="nodes"/>, both directions, at whichever of their addresses it uses.</summary>
    public List<(ulong From, ulong To)> CutGateway(IEnumerable<ulong> nodes) => nodes.Select(node => Cut(Gateway, node)).ToList();

    /// <summary>The gateway's links to <paramref name="nodes"/> (at whichever of their addresses it uses).</summary>
    public static List<(ulong From, ulong To)> GatewayLinks(params ulong[] nodes) => nodes.Select(node => (Gateway, node)).ToList();

    /// <summary>The links between <paramref name="node"/> and each of <paramref name="others"/>, both directions.</summary>
    public static List<(ulong From, ulong To)> LinksBetween(ulong node, IEnumerable<ulong> others) =>
        others.Where(other => other != node).SelectMany(other => new[] { (node, other), (other, node) }).ToList();

    /// <summary>Stalls <paramref name="links"/>: every byte held, no connection closed (<see cref="Link.Stall"/>), until <see cref="Resume"/>.</summary>
    public void Stall(IEnumerable<(ulong From, ulong To)> links)
    {
        foreach (var (from, to) in links)
        {
            LinkOf(from, to).Stall();
        }
    }

    /// <summary>Ends the stalls of <paramref name="links"/>: what they held goes on.</summary>
    public void Resume(IEnumerable<(ulong From, ulong To)> links)
    {
        foreach (var (from, to) in links)
        {
            LinkOf(from, to).Resume();
        }
    }

    /// <summary>Connections opened over <paramref name="link"/> so far, at any of the addresses it is reached at.</summary>
    public int Connections((ulong From, ulong To) link) => LinkOf(link.From, link.To).Connections;

    /// <summary>
    /// Ends one fault's cuts (what <see cref="Cut"/>, <see cref="Partition"/>, <see cref="Isolate"/> or
    /// <see cref="CutGateway"/> returned): a link another fault also cut stays cut until that one heals too.
    /// </summary>
    public void Heal(IEnumerable<(ulong From, ulong To)> links)
    {
        foreach (var (from, to) in links)
        {
            LinkOf(from, to).Release();
        }
    }

    public void HealAll()
    {
        foreach (var link in _links.Values)
        {
            link.Heal();
            link.Resume();
        }
    }

    public string DescribeCuts()
    {
        var cut = _links.Where(l => l.Value.IsCut).Select(l => $"{(l.Key.From == Gateway ? "gateway" : l.Key.From.ToString(CultureInfo.InvariantCulture))}->{l.Key.To}").ToList();
        return cut.Count == 0 ? "none" : string.Join(" ", cut);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var proxy in _configured.Values.Concat(_inbound.Values).Concat(_retired))
        {
            await proxy.DisposeAsync().ConfigureAwait(false);
        }
    }
}
