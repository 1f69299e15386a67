namespace Dcache.Node.Consensus;

/// <summary>
/// What this node proposed while leading (writes, membership changes), by the log index each got, until the entry at
/// that index is applied. A leader that proposes at an index where it had proposed in an earlier term (another
/// leader's entries replaced its own there, and it leads again) keeps the earlier proposal too, as displaced: the
/// replaced entry may still commit through another node that holds it (with five voters or more, a node that never
/// had the replacement can be elected with it), so only the apply of that index says which of them applied.
/// </summary>
internal sealed class ProposalsAwaitingApply<T>
{
    private readonly Dictionary<ulong, T> _latest = [];
    private readonly Dictionary<ulong, List<T>> _displaced = [];

    public bool IsEmpty => _latest.Count == 0 && _displaced.Count == 0;

    /// <summary>Records <paramref name="proposal"/> at <paramref name="index"/>, displacing one already there.</summary>
    public void Add(ulong index, T proposal)
    {
        Displace(index);
        _latest[index] = proposal;
    }

    /// <summary>A proposal at <paramref name="index"/> made in an earlier term no longer has its entry in this node's log.</summary>
    public void Displace(ulong index)
    {
        if (_latest.Remove(index, out var earlier))
        {
            if (!_displaced.TryGetValue(index, out var list))
            {
                _displaced[index] = list = [];
            }

            list.Add(earlier);
        }
    }

    /// <summary>Takes one proposal made at <paramref name="index"/>; call until it returns false.</summary>
    public bool TryTake(ulong index, out T proposal)
    {
        if (_latest.Remove(index, out proposal!))
        {
            return true;
        }

        if (_displaced.Count > 0 && _displaced.TryGetValue(index, out var list))
        {
            proposal = list[^1];
            list.RemoveAt(list.Count - 1);
            if (list.Count == 0)
            {
                _displaced.Remove(index);
            }

            return true;
        }

        return false;
    }

    /// <summary>Takes out every proposal <paramref name="match"/> picks, and returns them with their indexes.</summary>
    public IReadOnlyList<(ulong Index, T Proposal)> RemoveWhere(Func<ulong, T, bool> match)
    {
        List<(ulong Index, T Proposal)>? removed = null;
        foreach (var (index, proposal) in _latest)
        {
            if (match(index, proposal))
            {
                (removed ??= []).Add((index, proposal));
            }
        }

        foreach (var (index, _) in removed ?? [])
        {
            _latest.Remove(index);
        }

        List<ulong>? emptied = null;
        foreach (var (index, list) in _displaced)
        {
            for (var i = list.Count - 1; i >= 0; i--)
            {
                if (match(index, list[i]))
                {
                    (removed ??= []).Add((index, list[i]));
                    list.RemoveAt(i);
                }
            }

            if (list.Count == 0)
            {
                (emptied ??= []).Add(index);
            }
        }

        foreach (var index in emptied ?? [])
        {
            _displaced.Remove(index);
        }

        return removed ?? [];
    }

    /// <summary>Takes out every proposal.</summary>
    public IReadOnlyList<(ulong Index, T Proposal)> RemoveAll() => RemoveWhere(static (_, _) => true);
}
