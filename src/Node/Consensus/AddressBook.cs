namespace Dcache.Node.Consensus;

/// <summary>Node id -> gRPC address of every node this one knows. Thread-safe; read by services, changed rarely.</summary>
public sealed class AddressBook
{
    private volatile IReadOnlyDictionary<ulong, string> _addresses;

    public AddressBook(IReadOnlyDictionary<ulong, string> initial) => _addresses = new SortedDictionary<ulong, string>(initial.ToDictionary());

    public IReadOnlyDictionary<ulong, string> All => _addresses;

    public event Action<IReadOnlyDictionary<ulong, string>>? Changed;

    public bool Contains(ulong id) => _addresses.ContainsKey(id);

    public string? Find(ulong id) => id != 0 && _addresses.TryGetValue(id, out var address) ? address : null;

    public void Set(ulong id, string address)
    {
        var copy = new SortedDictionary<ulong, string>(_addresses.ToDictionary()) { [id] = address };
        _addresses = copy;
        Changed?.Invoke(copy);
    }
}
