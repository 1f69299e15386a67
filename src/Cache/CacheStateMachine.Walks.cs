namespace Dcache.Cache;

/// <summary>Walks of the write order at one instant that run a slice at a time between writes (<see cref="WriteOrderWalk"/>).</summary>
public sealed partial class CacheStateMachine
{
    // Few at a time (one per long read in progress): every write of a key tells each of them.
    private readonly List<WriteOrderWalk> _walks = [];

    /// <summary>Starts a walk of the keys as they are now; end it with <see cref="EndWalk"/>.</summary>
    internal WriteOrderWalk BeginWalk()
    {
        var walk = new WriteOrderWalk(_oldestWritten, _writeSequence, _entries.Count);
        _walks.Add(walk);
        return walk;
    }

    /// <summary>Walks the machine still tells about writes (tests).</summary>
    internal int WalkCount => _walks.Count;

    /// <summary>Stops telling <paramref name="walk"/> about writes (it is done, or abandoned).</summary>
    internal void EndWalk(WriteOrderWalk walk) => _walks.Remove(walk);

    private void NoteChangingForWalks(CacheEntry entry)
    {
        foreach (var walk in _walks)
        {
            walk.NoteChanging(entry);
        }
    }

    private void DetachWalks()
    {
        foreach (var walk in _walks)
        {
            walk.Detach();
        }

        _walks.Clear();
    }
}
