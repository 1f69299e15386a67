using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>
/// The replies the loop produces while it applies a Ready's entries and serves the reads they let through, handed to
/// their sinks together once that step is done. A command stream's writer wakes at the first reply it is handed and
/// sends what has arrived by then: replies handed over one by one between applies went out a few per message (a wave
/// of 800 pipelined SETs took about 100 messages of 6-9 replies each); handed over together, they fill a few.
/// </summary>
internal sealed class DeferredReplies
{
    private readonly List<(IReplySink Sink, Proto.Reply Reply)> _replies = [];

    public void Add(IReplySink sink, Proto.Reply reply) => _replies.Add((sink, reply));

    /// <summary>Hands every held reply to its sink, in the order they were added.</summary>
    public void Flush()
    {
        foreach (var (sink, reply) in _replies)
        {
            sink.Complete(reply);
        }

        _replies.Clear();
    }
}
