using Dcache.Cache;
using Dcache.Node.Services;
using Dcache.Protocol;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>
/// Serves reads for the driver loop, taking those whose work grows with the cache (KEYS; SCAN while its index is built or
/// catches up) or with the request (MGET, EXISTS and WATCH of more keys than a slice) a slice at a time across loop rounds, so
/// that no read holds the loop, and with it ticks, heartbeats and acknowledgements, for longer than one slice. Every
/// method runs on the loop.
/// </summary>
/// <remarks>
/// A KEYS read takes its keys at the instant it starts (after its read index, so still linearizable): the cache keeps
/// aside, as they were, the keys it has yet to visit that writes between slices change. Only one KEYS walks at a time, so
/// a write pays for at most one such walk (and one for SCAN's index). Matching its pattern and building its reply, work
/// as large as the keyspace that needs nothing of the cache, run on the thread pool. A SCAN call waits while the index
/// places the keys stored when it arrived, then is answered on the loop as before (a page is O(COUNT) work). A large MGET
/// or EXISTS likewise reads every key as it stood when the read started, the cache keeping aside the keys that writes
/// between slices change; one runs at a time, and its reply is built on the thread pool.
/// </remarks>
internal sealed class LongReads(CacheStateMachine cache, int sliceKeys)
{
    private readonly Queue<CommandInput> _keysWaiting = new();
    private readonly List<(CommandInput Input, ScanTicket Ticket)> _scansWaiting = [];
    private readonly Queue<CommandInput> _multiKeyWaiting = new();
    private (CommandInput Input, KeysRead Read)? _keys;
    private (CommandInput Input, MultiKeyRead Read)? _multiKey;

    /// <summary>Keys a slice may look at: each long read in progress gets at most this much of one loop round.</summary>
    public int SliceKeys => sliceKeys;

    /// <summary>True while a read waits for slices, or SCAN's index has work left (merges).</summary>
    public bool HasWork => _keys is not null || _keysWaiting.Count > 0 || _multiKey is not null || _multiKeyWaiting.Count > 0 || _scansWaiting.Count > 0 || cache.ScanHasWork;

    /// <summary>
    /// Serves <paramref name="input"/>, a read, judging expiry at <paramref name="nowMs"/>: returns its reply now, for the
    /// caller to hand over, or null when it is taken over the next rounds (and answered by then).
    /// </summary>
    public Proto.Reply? Serve(CommandInput input, long nowMs)
    {
        var command = input.Command;
        switch (command.OpCase)
        {
            case Proto.Command.OpOneofCase.Keys:
                _keysWaiting.Enqueue(input);
                if (_keys is null)
                {
                    StartNextKeys(nowMs, nowMs);
                }

                break;
            case Proto.Command.OpOneofCase.Scan:
                var ticket = cache.PrepareScan();
                if (!TryScan(input, ticket, nowMs))
                {
                    _scansWaiting.Add((input, ticket));
                }

                break;
            case Proto.Command.OpOneofCase.Mget when command.Mget.Keys.Count > sliceKeys:
            case Proto.Command.OpOneofCase.Exists when command.Exists.Keys.Count > sliceKeys:
            case Proto.Command.OpOneofCase.Watch when command.Watch.Keys.Count > sliceKeys:
                _multiKeyWaiting.Enqueue(input);
                if (_multiKey is null)
                {
                    StartNextMultiKey(nowMs, nowMs);
                }

                break;
            default:
                return ReadExecutor.Execute(command, cache, nowMs);
        }

        return null;
    }

    /// <summary>One round's share of the long reads, all judging expiry at <paramref name="nowMs"/>.</summary>
    public void RunSlice(long nowMs) => RunSlice(nowMs, nowMs);

    /// <summary>
    /// One round's share of the long reads: a slice of SCAN's index work, then of the KEYS and of the MGET, EXISTS or WATCH in
    /// progress. A read that starts
    /// or is answered in it judges expiry at <paramref name="nowMs"/>, or, a LOCAL read, at <paramref name="localNowMs"/>:
    /// the two run on different clocks (the leader's time, and a follower's own estimate of it).
    /// </summary>
    public void RunSlice(long nowMs, long localNowMs)
    {
        if (_scansWaiting.Count > 0 || cache.ScanHasWork)
        {
            cache.ScanWork(sliceKeys);
            _scansWaiting.RemoveAll(waiting => TryScan(waiting.Input, waiting.Ticket, IsLocal(waiting.Input) ? localNowMs : nowMs));
        }

        if (_keys is null)
        {
            StartNextKeys(nowMs, localNowMs); // the one in progress was dropped
        }

        if (_multiKey is null)
        {
            StartNextMultiKey(nowMs, localNowMs);
        }

        if (_keys is { } keys)
        {
            // Each slice here, and only here, may look at keys: so one round looks at no more than one slice's worth.
            if (keys.Read.Step(sliceKeys))
            {
                Finish(keys.Input, keys.Read);
                _keys = null;
                StartNextKeys(nowMs, localNowMs);
            }
        }

        if (_multiKey is { } multiKey && multiKey.Read.Step(sliceKeys))
        {
            var (input, read) = multiKey;
            _ = Task.Run(() => input.Replies.Complete(ReplyFactory.FromCache(input.Command.Id, read.ToReply())));
            _multiKey = null;
            StartNextMultiKey(nowMs, localNowMs);
        }
    }

    /// <summary>
    /// Drops the reads nobody waits for any more, in progress or queued: past their deadline (at <paramref name="nowMs"/>,
    /// the clock deadlines are on), or whose stream closed. A read in progress stops taking slices and lets go of what it
    /// kept aside for its instant (the values writes replaced since), and of its request; the next in line starts at the
    /// next <see cref="RunSlice(long, long)"/>. The loop calls it every round in which long reads have work. Without this a KEYS or an MGET of a million keys whose gateway gave up ran to its end, holding the
    /// overwritten values, and its gateway's retry elsewhere started the same work on another node.
    /// </summary>
    public void DropUnwanted(long nowMs)
    {
        if (_keys is { } keys && Unwanted(keys.Input, nowMs))
        {
            keys.Read.Abandon();
            Drop(keys.Input);
            _keys = null;
        }

        if (_multiKey is { } multiKey && Unwanted(multiKey.Input, nowMs))
        {
            multiKey.Read.Abandon();
            Drop(multiKey.Input);
            _multiKey = null;
        }

        DropUnwanted(_keysWaiting, nowMs);
        DropUnwanted(_multiKeyWaiting, nowMs);
        if (_scansWaiting.Count == 0)
        {
            return;
        }

        _scansWaiting.RemoveAll(waiting =>
        {
            if (!Unwanted(waiting.Input, nowMs))
            {
                return false;
            }

            Drop(waiting.Input);
            return true;
        });
    }

    private static void DropUnwanted(Queue<CommandInput> waiting, long nowMs)
    {
        for (var i = waiting.Count; i > 0 && waiting.TryDequeue(out var input); i--)
        {
            if (Unwanted(input, nowMs))
            {
                Drop(input);
            }
            else
            {
                waiting.Enqueue(input);
            }
        }
    }

    private static bool Unwanted(CommandInput input, long nowMs) => input.DeadlineMs <= nowMs || input.Replies.Abandoned;

    private static void Drop(CommandInput input) =>
        Fail(input, "read timed out: its deadline passed (or its stream closed) before it was served in full");

    /// <summary>Fails every read still waiting (the loop stops).</summary>
    public void FailAll(string message)
    {
        if (_keys is { } keys)
        {
            keys.Read.Abandon();
            Fail(keys.Input, message);
            _keys = null;
        }

        if (_multiKey is { } multiKey)
        {
            multiKey.Read.Abandon();
            Fail(multiKey.Input, message);
            _multiKey = null;
        }

        foreach (var waiting in new[] { _keysWaiting, _multiKeyWaiting })
        {
            while (waiting.TryDequeue(out var input))
            {
                Fail(input, message);
            }
        }

        foreach (var (input, _) in _scansWaiting)
        {
            Fail(input, message);
        }

        _scansWaiting.Clear();
    }

    private static void Fail(CommandInput input, string message) =>
        input.Replies.Complete(ReplyFactory.Failure(input.Command.Id, Proto.FailureKind.Unavailable, message));

    private void StartNextKeys(long nowMs, long localNowMs)
    {
        if (_keysWaiting.TryDequeue(out var input))
        {
            // The instant of this KEYS: every write applied so far is in it, none applied from here on.
            _keys = (input, cache.BeginKeys(IsLocal(input) ? localNowMs : nowMs));
        }
    }

    private void StartNextMultiKey(long nowMs, long localNowMs)
    {
        while (_multiKey is null && _multiKeyWaiting.TryDequeue(out var input))
        {
            var command = input.Command;
            var readNowMs = IsLocal(input) ? localNowMs : nowMs;
            // The instant of this read: every write applied so far is in it, none applied from here on.
            if (command.OpCase == Proto.Command.OpOneofCase.Watch)
            {
                if (cache.BeginWatchRead(ReadExecutor.Keys(command.Watch.Keys), readNowMs) is { } watch)
                {
                    _multiKey = (input, watch);
                }
                else
                {
                    input.Replies.Complete(ReadExecutor.Execute(command, cache, readNowMs)); // before the revision floor: nil
                }

                continue;
            }

            var isGet = command.OpCase == Proto.Command.OpOneofCase.Mget;
            var keys = ReadExecutor.Keys(isGet ? command.Mget.Keys : command.Exists.Keys);
            _multiKey = (input, cache.BeginMultiKeyRead(keys, values: isGet, readNowMs));
        }
    }

    private static bool IsLocal(CommandInput input) => input.Command.Consistency == Proto.ReadConsistency.Local;

    private bool TryScan(CommandInput input, ScanTicket ticket, long nowMs)
    {
        var scan = input.Command.Scan;
        // A page larger than int.MaxValue keys could not be sent anyway; the count only bounds the work.
        var count = (int)Math.Min(scan.Count, int.MaxValue);
        if (!cache.TryScan(ticket, scan.Cursor, count, nowMs, ReadExecutor.PatternFilter(scan.Pattern.Memory), out var page))
        {
            return false;
        }

        input.Replies.Complete(ReplyFactory.FromCache(input.Command.Id, page.ToReply()));
        return true;
    }

    /// <summary>Matches the pattern and builds the reply off the loop: both are O(keys) and need nothing of the cache.</summary>
    private static void Finish(CommandInput input, KeysRead read)
    {
        var pattern = input.Command.Keys.Pattern.Memory;
        _ = Task.Run(() => input.Replies.Complete(ReplyFactory.FromCache(input.Command.Id, read.ToReply(ReadExecutor.PatternFilter(pattern)))));
    }
}
