namespace Dcache.TestSupport.Simulation;

/// <summary>
/// Events ordered by virtual time, ties broken by scheduling order, so that the order of events never depends on
/// anything but the sequence of calls (PriorityQueue alone is not stable for equal priorities).
/// </summary>
public sealed class EventQueue<T>
{
    private readonly PriorityQueue<T, (long Time, long Sequence)> _queue = new();
    private long _sequence;

    public int Count => _queue.Count;

    public void Schedule(long time, T item) => _queue.Enqueue(item, (time, _sequence++));

    public bool TryDequeue(out T item, out long time)
    {
        if (_queue.TryDequeue(out item!, out var key))
        {
            time = key.Time;
            return true;
        }

        time = 0;
        return false;
    }
}
