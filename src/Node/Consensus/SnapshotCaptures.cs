using Dcache.Cache;

namespace Dcache.Node.Consensus;

/// <summary>
/// Snapshot captures in progress on the driver loop (the automatic snapshot, backups, digests), taken a slice of keys
/// per loop round (<see cref="SnapshotCapture"/>) so that capturing a large cache never holds the loop, and with it
/// ticks, heartbeats and acknowledgements, for longer than one slice. Every method runs on the loop.
/// </summary>
/// <remarks>
/// Each capture is of the instant it began; they may overlap (a backup asked for while the automatic snapshot is being
/// captured), but only the oldest takes a slice in a round, so a round does one slice's work however many wait.
/// </remarks>
internal sealed class SnapshotCaptures(CacheStateMachine cache, int sliceKeys)
{
    private readonly List<Pending> _pending = [];

    public bool HasWork => _pending.Count > 0;

    /// <summary>
    /// Begins capturing the cache as it is now; <paramref name="done"/> gets the snapshot on the loop once every key is
    /// captured, or <paramref name="failed"/> a reason if the loop stops first.
    /// </summary>
    public SnapshotCapture Begin(Action<CacheSnapshot> done, Action<string> failed)
    {
        var capture = cache.BeginSnapshotCapture();
        _pending.Add(new Pending(capture, done, failed));
        return capture;
    }

    /// <summary>One round's share: a slice of the oldest capture.</summary>
    public void RunSlice()
    {
        if (_pending.Count > 0 && _pending[0] is var oldest && oldest.Capture.Step(sliceKeys))
        {
            _pending.RemoveAt(0);
            oldest.Done(oldest.Capture.Result());
        }
    }

    /// <summary>Drops <paramref name="capture"/> (no longer wanted) without telling its owner.</summary>
    public void Abandon(SnapshotCapture capture)
    {
        var at = _pending.FindIndex(pending => ReferenceEquals(pending.Capture, capture));
        if (at >= 0)
        {
            _pending[at].Capture.Abandon();
            _pending.RemoveAt(at);
        }
    }

    /// <summary>Fails every capture still in progress (the loop stops).</summary>
    public void FailAll(string reason)
    {
        foreach (var pending in _pending)
        {
            pending.Capture.Abandon();
            pending.Failed(reason);
        }

        _pending.Clear();
    }

    private sealed record Pending(SnapshotCapture Capture, Action<CacheSnapshot> Done, Action<string> Failed);
}
