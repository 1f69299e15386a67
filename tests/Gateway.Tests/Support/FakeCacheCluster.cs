using System.Collections.Concurrent;
using System.Text;
using Dcache.Gateway.Cluster;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// An in-memory stand-in for the cluster: a dictionary with expiry and Redis 7 semantics for the proto's commands.
/// It records every command and its read mode, checks that no write session has two writes in flight, can hold
/// replies until released (to prove pipelined commands start together) and can be scripted to fail.
/// </summary>
internal sealed class FakeCacheCluster : ICacheCluster
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Entry> _data = new(StringComparer.Ordinal);
    private readonly Dictionary<ulong, ulong> _sessionsInFlight = [];
    private readonly Dictionary<ulong, ulong> _lastSequence = [];
    private readonly List<(Command Command, ReadMode Mode)> _executed = [];
    private readonly Dictionary<(long Index, string Key), Entry?> _watchedEntries = [];
    private long _appliedIndex = 1;
    private TaskCompletionSource _release = NewRelease();
    private bool _holding;

    public long NowMs { get; set; } = 1_700_000_000_000;

    /// <summary>Whether a watched transaction has applied (WATCH reads nil before: the cluster's revisions have not started).</summary>
    public bool RevisionsStarted { get; set; } = true;

    /// <summary>False for a cluster still at log format 7: a watched transaction is refused until the revisions started.</summary>
    public bool AcceptsWatchedTransactions { get; set; } = true;

    /// <summary>Returns a reply (or throws) instead of executing, when it returns non-null.</summary>
    public Func<Command, Reply?>? Script { get; set; }

    /// <summary>Completes replies in a shuffled order when holding is released (checks reply ordering).</summary>
    public bool ShuffleCompletions { get; set; }

    public ConcurrentQueue<string> SessionViolations { get; } = new();

    /// <summary>Client ids of the session registrations received, in order. They are answered at once (never held, nor in <see cref="Executed"/>).</summary>
    public ConcurrentQueue<ulong> Registrations { get; } = new();

    /// <summary>Answers session registrations instead of "+OK", when it returns non-null.</summary>
    public Func<Command, Reply?>? RegistrationScript { get; set; }

    /// <summary>The commands <see cref="Hold"/> holds (every command when null).</summary>
    public Func<Command, bool>? HoldOnly { get; set; }

    /// <summary>Off where a test measures what the gateway retains and the record would be counted with it.</summary>
    public bool RecordExecuted { get; set; } = true;

    public ClusterView View { get; set; } = new(1, "127.0.0.1:7001", 3, 3);

    public int InFlight;

    public IReadOnlyList<(Command Command, ReadMode Mode)> Executed
    {
        get
        {
            lock (_gate)
            {
                return [.. _executed];
            }
        }
    }

    public int KeyCount
    {
        get
        {
            lock (_gate)
            {
                return _data.Count(pair => !IsExpired(pair.Value));
            }
        }
    }

    /// <summary>From now on replies wait for <see cref="Release"/>.</summary>
    public void Hold()
    {
        lock (_gate)
        {
            _holding = true;
        }
    }

    public void Release()
    {
        TaskCompletionSource release;
        lock (_gate)
        {
            _holding = false;
            release = _release;
            _release = NewRelease();
        }

        release.TrySetResult();
    }

    public async Task WaitForExecutedAsync(int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Executed.Count < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"only {Executed.Count} of {count} commands reached the cluster");
            }

            await Task.Delay(5);
        }
    }

    public async Task WaitForInFlightAsync(int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (Volatile.Read(ref InFlight) < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"only {Volatile.Read(ref InFlight)} of {count} commands reached the cluster");
            }

            await Task.Delay(5);
        }
    }

    public async Task<Reply> ExecuteAsync(Command command, ReadMode mode, CancellationToken cancellationToken)
    {
        if (command.OpCase == Command.OpOneofCase.RegisterSession)
        {
            Registrations.Enqueue(command.ClientId);
            return RegistrationScript?.Invoke(command) ?? new Reply { Ok = true };
        }

        Task? wait = null;
        lock (_gate)
        {
            if (RecordExecuted)
            {
                _executed.Add((command.Clone(), mode));
            }

            if (command.ClientId != 0)
            {
                if (_sessionsInFlight.TryGetValue(command.ClientId, out var sequence))
                {
                    SessionViolations.Enqueue($"session {command.ClientId} sent {command.Sequence} while {sequence} was in flight");
                }

                _sessionsInFlight[command.ClientId] = command.Sequence;
                if (_lastSequence.TryGetValue(command.ClientId, out var last) && command.Sequence != last + 1)
                {
                    SessionViolations.Enqueue($"session {command.ClientId} jumped from {last} to {command.Sequence}");
                }

                _lastSequence[command.ClientId] = command.Sequence;
            }

            if (_holding && (HoldOnly?.Invoke(command) ?? true))
            {
                wait = _release.Task;
            }
        }

        Interlocked.Increment(ref InFlight);
        try
        {
            if (wait is not null)
            {
                await wait.WaitAsync(cancellationToken);
                if (ShuffleCompletions)
                {
                    // Let replies complete in an order unrelated to the order sent.
                    await Task.Delay(Random.Shared.Next(0, 5), cancellationToken);
                }
            }

            if (Script?.Invoke(command) is { } scripted)
            {
                return scripted;
            }

            lock (_gate)
            {
                _appliedIndex += command.IsWrite ? 1 : 0;
                return Apply(command);
            }
        }
        finally
        {
            lock (_gate)
            {
                _sessionsInFlight.Remove(command.ClientId);
            }

            Interlocked.Decrement(ref InFlight);
        }
    }

    public void Put(string key, string value, long? expireAtMs = null)
    {
        lock (_gate)
        {
            _data[key] = new Entry(Encoding.Latin1.GetBytes(value), expireAtMs);
        }
    }

    public long? ExpiryOf(string key)
    {
        lock (_gate)
        {
            return _data.TryGetValue(key, out var entry) && !IsExpired(entry) ? entry.ExpireAtMs : null;
        }
    }

    private Reply Apply(Command command)
    {
        switch (command.OpCase)
        {
            case Command.OpOneofCase.Get:
                return Find(command.Get.Key) is { } found ? Bulk(found.Value) : Nil();
            case Command.OpOneofCase.Mget:
                var array = new ArrayReply();
                foreach (var key in command.Mget.Keys)
                {
                    array.Items.Add(Find(key) is { } item ? Bulk(item.Value) : Nil());
                }

                return new Reply { Array = array };
            case Command.OpOneofCase.Exists:
                return Integer(command.Exists.Keys.Count(key => Find(key) is not null));
            case Command.OpOneofCase.Ttl:
                var ttlEntry = Find(command.Ttl.Key);
                if (ttlEntry is null)
                {
                    return Integer(-2);
                }

                if (ttlEntry.ExpireAtMs is not { } at)
                {
                    return Integer(-1);
                }

                var remaining = at - NowMs;
                return Integer(command.Ttl.Milliseconds ? remaining : (remaining + 500) / 1000);
            case Command.OpOneofCase.Dbsize:
                return Integer(_data.Count(pair => !IsExpired(pair.Value)));
            case Command.OpOneofCase.Set:
                return ApplySet(command.Set);
            case Command.OpOneofCase.Del:
                var deleted = 0;
                foreach (var key in command.Del.Keys)
                {
                    if (Find(key) is not null)
                    {
                        _data.Remove(Name(key));
                        deleted++;
                    }
                }

                return Integer(deleted);
            case Command.OpOneofCase.Mset:
                for (var i = 0; i < command.Mset.Keys.Count; i++)
                {
                    _data[Name(command.Mset.Keys[i])] = new Entry(command.Mset.Values[i].ToByteArray(), null);
                }

                return new Reply { Ok = true };
            case Command.OpOneofCase.IncrBy:
                var current = Find(command.IncrBy.Key);
                long value = 0;
                if (current is not null && !RespInteger.TryParse(current.Value, out value))
                {
                    return new Reply { Error = "ERR value is not an integer or out of range" };
                }

                var delta = command.IncrBy.Delta;
                if ((delta > 0 && value > long.MaxValue - delta) || (delta < 0 && value < long.MinValue - delta))
                {
                    return new Reply { Error = "ERR increment or decrement would overflow" };
                }

                value += delta;
                _data[Name(command.IncrBy.Key)] = new Entry(Encoding.ASCII.GetBytes(value.ToString(System.Globalization.CultureInfo.InvariantCulture)), current?.ExpireAtMs);
                return Integer(value);
            case Command.OpOneofCase.Expire:
                return ApplyExpire(command.Expire);
            case Command.OpOneofCase.Persist:
                var persisted = Find(command.Persist.Key);
                if (persisted?.ExpireAtMs is null)
                {
                    return Integer(0);
                }

                _data[Name(command.Persist.Key)] = persisted with { ExpireAtMs = null };
                return Integer(1);
            case Command.OpOneofCase.Strlen:
                return Integer(Find(command.Strlen.Key)?.Value.Length ?? 0);
            case Command.OpOneofCase.Getrange:
                return ApplyGetRange(command.Getrange);
            case Command.OpOneofCase.Type:
                return new Reply { Bulk = ByteString.CopyFromUtf8(Find(command.Type.Key) is null ? "none" : "string") };
            case Command.OpOneofCase.Expiretime:
                var timed = Find(command.Expiretime.Key);
                return Integer(timed is null ? -2 : timed.ExpireAtMs is not { } expireAt ? -1 : command.Expiretime.Milliseconds ? expireAt : (expireAt + 500) / 1000);
            case Command.OpOneofCase.Keys:
                var keys = new ArrayReply();
                var pattern = command.Keys.Pattern.Span;
                foreach (var name in _data.Keys.Order(StringComparer.Ordinal).ToList())
                {
                    if (Find(ByteString.CopyFrom(Encoding.Latin1.GetBytes(name))) is not null && Dcache.Protocol.GlobPattern.Matches(pattern, Encoding.Latin1.GetBytes(name), ignoreCase: false))
                    {
                        keys.Items.Add(Bulk(Encoding.Latin1.GetBytes(name)));
                    }
                }

                return new Reply { Array = keys };
            case Command.OpOneofCase.Scan:
                return ApplyScan(command.Scan);
            case Command.OpOneofCase.Getdel:
                var removed = Find(command.Getdel.Key);
                _data.Remove(Name(command.Getdel.Key));
                return removed is null ? Nil() : Bulk(removed.Value);
            case Command.OpOneofCase.Getex:
                return ApplyGetEx(command.Getex);
            case Command.OpOneofCase.Append:
                var appendTo = Find(command.Append.Key);
                var appended = (appendTo?.Value ?? []).Concat(command.Append.Value.ToByteArray()).ToArray();
                _data[Name(command.Append.Key)] = new Entry(appended, appendTo?.ExpireAtMs);
                return Integer(appended.Length);
            case Command.OpOneofCase.IncrByFloat:
                return ApplyIncrByFloat(command.IncrByFloat);
            case Command.OpOneofCase.Msetnx:
                if (command.Msetnx.Keys.Any(key => Find(key) is not null))
                {
                    return Integer(0);
                }

                for (var i = 0; i < command.Msetnx.Keys.Count; i++)
                {
                    _data[Name(command.Msetnx.Keys[i])] = new Entry(command.Msetnx.Values[i].ToByteArray(), null);
                }

                return Integer(1);
            case Command.OpOneofCase.Flushall:
                _data.Clear();
                return new Reply { Ok = true };
            case Command.OpOneofCase.Rename:
                return ApplyRename(command.Rename);
            case Command.OpOneofCase.Setrange:
                var target = Find(command.Setrange.Key);
                var ranged = (target?.Value ?? []).ToList();
                var offset = (int)command.Setrange.Offset;
                ranged.AddRange(new byte[Math.Max(0, offset + command.Setrange.Value.Length - ranged.Count)]);
                command.Setrange.Value.Span.CopyTo(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ranged)[offset..]);
                _data[Name(command.Setrange.Key)] = new Entry([.. ranged], target?.ExpireAtMs);
                return Integer(ranged.Count);
            case Command.OpOneofCase.Copy:
                var copied = Find(command.Copy.Source);
                if (copied is null || (!command.Copy.Replace && Find(command.Copy.Destination) is not null))
                {
                    return Integer(0);
                }

                _data[Name(command.Copy.Destination)] = copied;
                return Integer(1);
            case Command.OpOneofCase.Watch:
                return ApplyWatch(command.Watch);
            case Command.OpOneofCase.Transaction when command.Transaction.Watched && !RevisionsStarted && !AcceptsWatchedTransactions:
                return new Reply { Error = "ERR WATCH needs every node on a build that reads log format 8 (a rolling upgrade is in progress)" };
            case Command.OpOneofCase.Transaction when command.Transaction.Watched && command.Transaction.Watches.Any(WatchedKeyChanged):
                return Nil();
            case Command.OpOneofCase.Transaction:
                // Applied under the one lock, as the cluster applies it in one log entry.
                RevisionsStarted |= command.Transaction.Watched;
                var replies = new ArrayReply();
                foreach (var queued in command.Transaction.Commands)
                {
                    replies.Items.Add(Apply(queued));
                }

                return new Reply { Array = replies };
            case Command.OpOneofCase.Randomkey:
                var live = _data.Where(pair => !IsExpired(pair.Value)).Select(pair => pair.Key).Order(StringComparer.Ordinal).FirstOrDefault();
                return live is null ? Nil() : Bulk(Encoding.Latin1.GetBytes(live));
            default:
                return new Reply { Failure = new Failure { Kind = FailureKind.InvalidRequest, Message = "command without an operation" } };
        }
    }

    /// <summary>
    /// WATCH's read, as the cluster answers it: nil until a watched transaction started the revisions, then the applied
    /// index (here a count of commands applied) and each key's liveness. What each key held is remembered per index, and
    /// a watched transaction counts a key changed when it holds another entry than it did (every write here stores a new
    /// entry object).
    /// </summary>
    private Reply ApplyWatch(WatchRequest watch)
    {
        if (!RevisionsStarted)
        {
            return Nil();
        }

        var array = new ArrayReply();
        array.Items.Add(Integer(_appliedIndex));
        foreach (var key in watch.Keys)
        {
            var entry = Find(key);
            _watchedEntries[(_appliedIndex, Name(key))] = entry;
            array.Items.Add(Integer(entry is null ? 0 : 1));
        }

        return new Reply { Array = array };
    }

    private bool WatchedKeyChanged(WatchedKey watch) =>
        !_watchedEntries.TryGetValue(((long)watch.WatchedAt, Name(watch.Key)), out var then) || !ReferenceEquals(then, Find(watch.Key));

    private Reply ApplySet(SetRequest set)
    {
        var existing = Find(set.Key);
        var old = set.Get ? (existing is null ? Nil() : Bulk(existing.Value)) : null;
        if ((set.Condition == SetCondition.IfAbsent && existing is not null) || (set.Condition == SetCondition.IfPresent && existing is null))
        {
            return old ?? Nil();
        }

        long? expireAt = set.ExpiryCase switch
        {
            SetRequest.ExpiryOneofCase.TtlMs => NowMs + set.TtlMs,
            SetRequest.ExpiryOneofCase.ExpireAtMs => set.ExpireAtMs,
            SetRequest.ExpiryOneofCase.KeepTtl => existing?.ExpireAtMs,
            _ => null,
        };
        _data[Name(set.Key)] = new Entry(set.Value.ToByteArray(), expireAt);
        return old ?? new Reply { Ok = true };
    }

    /// <summary>SCAN over the live keys in ordinal order, the cursor an index into it: enough for the gateway's side.</summary>
    private Reply ApplyScan(ScanRequest scan)
    {
        var names = _data.Keys.Where(name => !IsExpired(_data[name])).Order(StringComparer.Ordinal).ToList();
        var start = (int)Math.Min(scan.Cursor, (ulong)names.Count);
        var end = (int)Math.Min((ulong)start + scan.Count, (ulong)names.Count);
        var keys = new ArrayReply();
        foreach (var name in names[start..end])
        {
            var bytes = Encoding.Latin1.GetBytes(name);
            if (Dcache.Protocol.GlobPattern.Matches(scan.Pattern.Span, bytes, ignoreCase: false))
            {
                keys.Items.Add(Bulk(bytes));
            }
        }

        var next = end == names.Count ? 0 : end;
        var page = new ArrayReply();
        page.Items.Add(Bulk(Encoding.ASCII.GetBytes(next.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        page.Items.Add(new Reply { Array = keys });
        return new Reply { Array = page };
    }

    private Reply ApplyGetRange(GetRangeRequest range)
    {
        var value = Find(range.Key)?.Value ?? [];
        long start = range.Start, end = range.End, length = value.Length;
        if (start < 0 && end < 0 && start > end)
        {
            return Bulk([]);
        }

        start = start < 0 ? Math.Max(0, length + start) : start;
        end = Math.Min(end < 0 ? Math.Max(0, length + end) : end, length - 1);
        return Bulk(start > end ? [] : value[(int)start..(int)(end + 1)]);
    }

    private Reply ApplyGetEx(GetExRequest getEx)
    {
        var entry = Find(getEx.Key);
        if (entry is null)
        {
            return Nil();
        }

        long? at = getEx.ExpiryCase switch
        {
            GetExRequest.ExpiryOneofCase.TtlMs => NowMs + getEx.TtlMs,
            GetExRequest.ExpiryOneofCase.ExpireAtMs => getEx.ExpireAtMs,
            _ => null,
        };
        if (at <= NowMs)
        {
            _data.Remove(Name(getEx.Key));
        }
        else
        {
            _data[Name(getEx.Key)] = entry with { ExpireAtMs = at };
        }

        return Bulk(entry.Value);
    }

    private Reply ApplyIncrByFloat(IncrByFloatRequest increment)
    {
        const System.Globalization.NumberStyles style = System.Globalization.NumberStyles.Float & ~System.Globalization.NumberStyles.AllowLeadingWhite & ~System.Globalization.NumberStyles.AllowTrailingWhite;
        var entry = Find(increment.Key);
        if (!decimal.TryParse(entry is null ? "0" : Encoding.Latin1.GetString(entry.Value), style, System.Globalization.CultureInfo.InvariantCulture, out var current)
            || !decimal.TryParse(increment.Increment.ToStringUtf8(), style, System.Globalization.CultureInfo.InvariantCulture, out var delta))
        {
            return new Reply { Error = "ERR value is not a valid float" };
        }

        var text = (current + delta).ToString(System.Globalization.CultureInfo.InvariantCulture);
        text = text.Contains('.', StringComparison.Ordinal) ? text.TrimEnd('0').TrimEnd('.') : text;
        _data[Name(increment.Key)] = new Entry(Encoding.ASCII.GetBytes(text), entry?.ExpireAtMs);
        return Bulk(Encoding.ASCII.GetBytes(text));
    }

    private Reply ApplyRename(RenameRequest rename)
    {
        var entry = Find(rename.Source);
        if (entry is null)
        {
            return new Reply { Error = "ERR no such key" };
        }

        var done = rename.IfAbsent ? Integer(1) : new Reply { Ok = true };
        if (rename.Source == rename.Destination)
        {
            return rename.IfAbsent ? Integer(0) : done;
        }

        if (rename.IfAbsent && Find(rename.Destination) is not null)
        {
            return Integer(0);
        }

        _data.Remove(Name(rename.Source));
        _data[Name(rename.Destination)] = entry;
        return done;
    }

    private Reply ApplyExpire(ExpireRequest expire)
    {
        var entry = Find(expire.Key);
        if (entry is null)
        {
            return Integer(0);
        }

        var at = expire.WhenCase == ExpireRequest.WhenOneofCase.TtlMs ? NowMs + expire.TtlMs : expire.ExpireAtMs;
        var hasTtl = entry.ExpireAtMs is not null;
        var current = entry.ExpireAtMs ?? long.MaxValue;
        var applies = expire.Condition switch
        {
            ExpireCondition.ExpireIfNoTtl => !hasTtl,
            ExpireCondition.ExpireIfHasTtl => hasTtl,
            ExpireCondition.ExpireIfGreater => hasTtl && at > current,
            ExpireCondition.ExpireIfLess => at < current,
            ExpireCondition.ExpireIfHasTtlAndLess => hasTtl && at < current,
            _ => true,
        };
        if (!applies)
        {
            return Integer(0);
        }

        if (at <= NowMs)
        {
            _data.Remove(Name(expire.Key));
        }
        else
        {
            _data[Name(expire.Key)] = entry with { ExpireAtMs = at };
        }

        return Integer(1);
    }

    private Entry? Find(ByteString key)
    {
        var name = Name(key);
        if (!_data.TryGetValue(name, out var entry))
        {
            return null;
        }

        if (IsExpired(entry))
        {
            _data.Remove(name);
            return null;
        }

        return entry;
    }

    private bool IsExpired(Entry entry) => entry.ExpireAtMs is { } at && at <= NowMs;

    private static string Name(ByteString key) => Encoding.Latin1.GetString(key.Span);

    private static Reply Bulk(byte[] value) => new() { Bulk = ByteString.CopyFrom(value) };

    private static Reply Nil() => new() { Nil = true };

    private static Reply Integer(long value) => new() { Integer = value };

    private static TaskCompletionSource NewRelease() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private sealed record Entry(byte[] Value, long? ExpireAtMs);
}
