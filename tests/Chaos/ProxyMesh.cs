using Dcache.Integration.Tests.Support;

namespace Dcache.Chaos;

/// <summary>
/// A <see cref="LinkProxy"/> on every directed link between the nodes of a <see cref="LocalCluster"/>, installed
/// through <see cref="LocalCluster.InitialClusterOf"/> before the nodes start. The gateway keeps the nodes' direct
/// addresses: partitions cut nodes from each other, never from clients.
/// </summary>
internal sealed class ProxyMesh : IAsyncDisposable
{
    private readonly Dictionary<(ulong From, ulong To), LinkProxy> _links = [];

    /// <summary>Source id of a joined node's inbound proxy, which every other node shares.</summary>
    private const ulong AnyNode = 0;

    private readonly LocalCluster _cluster;
    private readonly ulong[] _founders;
    private readonly List<ulong> _joiners = [];

    public ProxyMesh(LocalCluster cluster)
    {
        _cluster = cluster;
        _founders = [.. cluster.Nodes.Keys];
        foreach (var from in _founders)
        {
            foreach (var to in _founders.Where(to => to != from))
            {
                _links[(from, to)] = new LinkProxy(from, to, cluster[to].GrpcPort);
            }
        }

        cluster.InitialClusterOf = self => string.Join(",", _founders.Select(id =>
            $"{id}={(id == self ? cluster[id].GrpcUrl : _links[(self, id)].Url)}"));
    }

    /// <summary>
    /// Proxies for a node that joins later (defined in the cluster with <see cref="LocalCluster.AddJoiningNode"/>):
    /// its own links to the founders, and one inbound proxy that every other node reaches it through, since the
    /// address a member is added with travels through the log and is the same for all. Returns that address.
    /// </summary>
    public string AddJoiner(ulong id)
    {
        foreach (var founder in _founders)
        {
            _links[(id, founder)] = new LinkProxy(id, founder, _cluster[founder].GrpcPort);
        }

        // It must be able to answer whichever member leads, so it lists every node that may be a member by then:
        // the founders through its own links, earlier joiners through their shared inbound proxies.
        var reachable = _founders.Select(f => $"{f}={_links[(id, f)].Url}")
            .Concat(_joiners.Select(j => $"{j}={_links[(AnyNode, j)].Url}"))
            .ToList();
        _links[(AnyNode, id)] = new LinkProxy(AnyNode, id, _cluster[id].GrpcPort);
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

    public void HealAll()
    {
        foreach (var link in _links.Values)
        {
            link.Heal();
        }
    }

    public string DescribeCuts()
    {
        var cut = _links.Values.Where(l => l.IsCut).Select(l => $"{(l.From == AnyNode ? "*" : l.From)}->{l.To}").ToList();
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
