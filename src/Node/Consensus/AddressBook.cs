using Dcache.Raft;

namespace Dcache.Node.Consensus;

/// <summary>
/// Node id -> gRPC address of every member this node talks to. Thread-safe; read by services, changed rarely.
/// Who is a member comes from the applied membership only. Every membership change carries the member's address
/// as its context, so a member added at runtime becomes reachable everywhere and a restarted node finds its peers
/// from its own log and snapshot. Where this node's configured InitialCluster lists a member, that address wins:
/// it is how one node is pointed at a peer through a proxy or a new name (the chaos suite's partition proxies).
/// Before a node has joined (empty membership) the configured members are all it has.
/// </summary>
public sealed class AddressBook
{
    private readonly IReadOnlyDictionary<ulong, string> _configured;
    private volatile IReadOnlyDictionary<ulong, string> _addresses;

    public AddressBook(IReadOnlyDictionary<ulong, string> configured)
    {
        _configured = new SortedDictionary<ulong, string>(configured.ToDictionary());
        _addresses = _configured;
    }

    public IReadOnlyDictionary<ulong, string> All => _addresses;

    public event Action<IReadOnlyDictionary<ulong, string>>? Changed;

    public bool Contains(ulong id) => _addresses.ContainsKey(id);

    public string? Find(ulong id) => id != 0 && _addresses.TryGetValue(id, out var address) ? address : null;

    /// <summary>Makes the book list exactly the members of <paramref name="membership"/>; raises <see cref="Changed"/> when that changes anything.</summary>
    public void Follow(Membership membership)
    {
        var next = new SortedDictionary<ulong, string>();
        if (membership.Voters.IsEmpty && membership.Learners.IsEmpty)
        {
            foreach (var (id, address) in _configured)
            {
                next[id] = address;
            }
        }
        else
        {
            foreach (var id in membership.All)
            {
                if ((_configured.GetValueOrDefault(id) ?? membership.ContextOf(id)) is { Length: > 0 } address)
                {
                    next[id] = address;
                }
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
