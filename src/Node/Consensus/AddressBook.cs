using Dcache.Raft;

namespace Dcache.Node.Consensus;

/// <summary>
/// Node id -> gRPC address of every member this node talks to. Thread-safe; read by services, changed rarely.
/// Who is a member comes from the applied membership only. Every membership change carries the member's address
/// as its context, so a member added at runtime becomes reachable everywhere and a restarted node finds its peers
/// from its own log and snapshot. An address set by `member update` (<see cref="Membership.UpdatedContexts"/>) comes
/// first: the member has moved, and whatever this node was configured with for it names where it used to be. Next,
/// where this node's configured InitialCluster lists a member, that address wins over the one it joined with: it is
/// how one node is pointed at a peer through a proxy or a new name (the chaos suite's partition proxies).
/// Last come the addresses peers announce when they open a stream to this node: a node that has just joined has
/// neither the log nor, perhaps, the leader in its configuration, and must still answer the leader. Likewise a
/// member that was down while another joined knows the newcomer only from its traffic until it catches up, and
/// the newcomer may be the leader it has to catch up from, so heard peers are listed whatever the membership says,
/// except those this node saw removed.
/// </summary>
public sealed class AddressBook
{
    private readonly IReadOnlyDictionary<ulong, string> _configured;
    private readonly Dictionary<ulong, string> _heard = [];
    private readonly HashSet<ulong> _removed = [];
    private readonly Lock _changing = new();
    private Membership _membership = Membership.Empty;
    private volatile IReadOnlyDictionary<ulong, string> _addresses;

    public AddressBook(IReadOnlyDictionary<ulong, string> configured)
    {
        _configured = new SortedDictionary<ulong, string>(configured.ToDictionary());
        _addresses = _configured;
    }

    public IReadOnlyDictionary<ulong, string> All => _addresses;

    /// <summary>Raised (under the book's lock, so in order) with the new addresses whenever they change.</summary>
    public event Action<IReadOnlyDictionary<ulong, string>>? Changed;

    public bool Contains(ulong id) => _addresses.ContainsKey(id);

    public string? Find(ulong id) => id != 0 && _addresses.TryGetValue(id, out var address) ? address : null;

    /// <summary>Makes the book list exactly the members of <paramref name="membership"/>; raises <see cref="Changed"/> when that changes anything.</summary>
    public void Follow(Membership membership)
    {
        lock (_changing)
        {
            foreach (var gone in _membership.All.Where(id => !membership.Contains(id)))
            {
                _removed.Add(gone);
                _heard.Remove(gone);
            }

            _removed.ExceptWith(membership.All); // added back
            _membership = membership;
            Rebuild();
        }
    }

    /// <summary>
    /// True when this node applied <paramref name="id"/>'s removal (and no later re-add): its traffic is refused. A
    /// node this one has never heard of is not refused, since it may have joined while this node was down or behind.
    /// </summary>
    public bool WasRemoved(ulong id)
    {
        lock (_changing)
        {
            return _removed.Contains(id);
        }
    }

    /// <summary>Remembers where <paramref name="id"/> said it listens; used only where neither configuration nor log says.</summary>
    public void Heard(ulong id, string address)
    {
        if (Uri.TryCreate(address, UriKind.Absolute, out var uri) && System.Net.IPAddress.TryParse(uri.Host.Trim('[', ']'), out var ip)
            && (ip.Equals(System.Net.IPAddress.Any) || ip.Equals(System.Net.IPAddress.IPv6Any)))
        {
            // A node listening on every interface announces 0.0.0.0 (or [::]): dialled from another host that is the dialler
            // itself. Not an address to reach the node at.
            return;
        }

        lock (_changing)
        {
            if (_removed.Contains(id) || (_heard.TryGetValue(id, out var known) && known == address))
            {
                return;
            }

            _heard[id] = address;
            Rebuild();
        }
    }

    private void Rebuild()
    {
        var next = new SortedDictionary<ulong, string>();
        var joined = !_membership.Voters.IsEmpty || !_membership.Learners.IsEmpty;
        foreach (var id in joined ? _membership.All.Union(_heard.Keys) : _configured.Keys.Union(_heard.Keys))
        {
            var moved = _membership.UpdatedContexts.Contains(id) ? _membership.ContextOf(id) : null;
            if ((moved ?? _configured.GetValueOrDefault(id) ?? _membership.ContextOf(id) ?? _heard.GetValueOrDefault(id)) is { Length: > 0 } address)
            {
                next[id] = address;
            }
        }

        if (next.Count == _addresses.Count && next.All(kv => _addresses.TryGetValue(kv.Key, out var known) && known == kv.Value))
        {
            return;
        }

        _addresses = next;
        Changed?.Invoke(next);
    }
}
