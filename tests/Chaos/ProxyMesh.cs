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

    public ProxyMesh(LocalCluster cluster)
    {
        foreach (var from in cluster.Nodes.Keys)
        {
            foreach (var to in cluster.Nodes.Keys.Where(to => to != from))
            {
                _links[(from, to)] = new LinkProxy(from, to, cluster[to].GrpcPort);
            }
        }

        cluster.InitialClusterOf = self => string.Join(",", cluster.Nodes.Values.Select(n =>
            $"{n.Id}={(n.Id == self ? n.GrpcUrl : _links[(self, n.Id)].Url)}"));
    }

    public IEnumerable<LinkProxy> Links => _links.Values;

    /// <summary>Cuts the traffic node <paramref name="from"/> sends to node <paramref name="to"/> (only that direction).</summary>
    public void Cut(ulong from, ulong to) => _links[(from, to)].Cut();

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

    public void HealAll()
    {
        foreach (var link in _links.Values)
        {
            link.Heal();
        }
    }

    public string DescribeCuts()
    {
        var cut = _links.Values.Where(l => l.IsCut).Select(l => $"{l.From}->{l.To}").ToList();
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
