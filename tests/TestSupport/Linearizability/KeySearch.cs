using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Dcache.TestSupport.Linearizability;

/// <summary>
/// Checks one key's sub-history with Lowe's refinement of the Wing &amp; Gong search (the algorithm Porcupine
/// uses): call and return events sit in a doubly linked list in time order; the search repeatedly takes a call
/// that appears before the first outstanding return, applies it to the model and, if the model accepts it,
/// "lifts" the operation out of the list and continues; reaching a return whose call was not lifted is a dead end,
/// so it backtracks. Pairs (linearized set, model state) already explored are memoised and pruned.
/// </summary>
/// <remarks>
/// Operations that never returned get a return event at +infinity, after every real return. They may be lifted
/// whenever their call is reachable, and the search succeeds as soon as every operation that did return is
/// linearized, so they may also stay out of the linearization altogether.
/// Two refinements keep the search near-linear on simulator histories: a read of the current value is lifted
/// without trying alternatives to it (see <see cref="TryLift"/>), and operations that never returned and whose
/// effect nobody observed are left out before the search starts (see <see cref="DecideInclusion"/>).
/// </remarks>
internal sealed class KeySearch
{
    // Node numbering of the event list: 0 is the head, 1 the tail, operation i's call is 2 + 2i (even) and its
    // return 3 + 2i (odd), so the loop tells calls from returns and finds the operation without a lookup.
    private const int Head = 0;
    private const int Tail = 1;

    private readonly string _key;
    private readonly CheckOptions _options;
    private readonly RegisterModel _model = new();

    // The sub-history sorted by call time; an index into it is the "#n" an explanation shows.
    private readonly Operation[] _ops;
    private readonly ModelOperation[] _compiled;
    private readonly Inclusion[] _inclusion;

    // The operations the search works on, numbered in call order ("search ids"), and per search id:
    private readonly int[] _opIndex;
    private readonly bool[] _pending;
    private readonly ulong[] _zobrist;
    private readonly int _returnedCount;

    private readonly int[] _next;
    private readonly int[] _prev;
    private readonly int[] _eventOrder;

    // Search state. The stack holds, per linearized operation, the state before it and whether it was forced.
    private readonly ulong[] _bits;
    private readonly int[] _stackIds;
    private readonly int[] _stackStates;
    private readonly bool[] _stackForced;
    private readonly StateCache _cache = new();
    private ulong _setHash;
    private int _depth;
    private int _state = RegisterModel.Absent;
    private int _linearizedReturned;
    private long _explored;

    // The longest prefix seen, for explanations.
    private readonly int[] _best;
    private int _bestLength;
    private bool _bestIsOnStack;
    private int _sameAsBest;

    private KeySearch(string key, IReadOnlyList<Operation> subHistory, CheckOptions options)
    {
        _key = key;
        _options = options;
        _ops = SortByCallTime(subHistory);
        _compiled = new ModelOperation[_ops.Length];
        for (var i = 0; i < _ops.Length; i++)
        {
            _compiled[i] = _model.Compile(_ops[i]);
        }

        _inclusion = DecideInclusion(_ops, _compiled, _model);
        _opIndex = Enumerable.Range(0, _ops.Length).Where(i => _inclusion[i] == Inclusion.Searched).ToArray();
        var count = _opIndex.Length;
        _pending = new bool[count];
        _zobrist = new ulong[count];
        var random = 0x5DEECE66DUL;
        for (var id = 0; id < count; id++)
        {
            _pending[id] = _ops[_opIndex[id]].ReturnTime is null;
            _returnedCount += _pending[id] ? 0 : 1;
            _zobrist[id] = SplitMix64(ref random);
        }

        _eventOrder = SortEvents();
        _next = new int[2 * count + 2];
        _prev = new int[2 * count + 2];
        var previous = Head;
        foreach (var node in _eventOrder)
        {
            _next[previous] = node;
            _prev[node] = previous;
            previous = node;
        }

        _next[previous] = Tail;
        _prev[Tail] = previous;

        _bits = new ulong[(count + 63) >> 6];
        _stackIds = new int[count];
        _stackStates = new int[count];
        _stackForced = new bool[count];
        _best = new int[count];
    }

    private enum Inclusion
    {
        Searched,
        PendingRead,
        PendingUnobservable,
    }

    public static KeyResult Run(string key, IReadOnlyList<Operation> subHistory, CheckOptions options)
    {
        var search = new KeySearch(key, subHistory, options);
        var outcome = search.Search();
        var explanation = outcome.Outcome == CheckOutcome.Linearizable ? null : search.Explain(outcome);
        return new KeyResult(key, outcome.Outcome, subHistory.Count, outcome.Explored, explanation);
    }

    private SearchOutcome Search()
    {
        if (_returnedCount == 0)
        {
            return new SearchOutcome(CheckOutcome.Linearizable, 0, [], null);
        }

        var maxExplored = _options.MaxStatesPerKey;
        var deadline = _options.TimeBudgetPerKey is { } budget
            ? Stopwatch.GetTimestamp() + (long)(budget.TotalSeconds * Stopwatch.Frequency)
            : long.MaxValue;

        // At each new node the search first scans the candidates for a read of the current value, which settles
        // the node on its own (see TryLift), and only when there is none walks them again trying each in turn.
        var entry = _next[Head];
        var scanning = true;
        while (true)
        {
            if (++_explored > maxExplored)
            {
                return GiveUp($"the search stopped after exploring {maxExplored} states (CheckOptions.MaxStatesPerKey)");
            }

            if ((_explored & 1023) == 0 && Stopwatch.GetTimestamp() > deadline)
            {
                return GiveUp($"the search stopped after its time budget of {_options.TimeBudgetPerKey} (CheckOptions.TimeBudgetPerKey)");
            }

            bool lifted;
            if ((entry & 1) == 1)
            {
                if (scanning)
                {
                    scanning = false;
                    entry = _next[Head];
                    continue;
                }

                // A return whose call was not lifted: that operation had to take effect before everything still
                // in the list, and no order tried from here allows it.
                Debug.Assert(entry != Tail && !_pending[(entry - 3) >> 1], "pending returns come after all real returns");
                lifted = false;
            }
            else if (scanning)
            {
                var id = (entry - 2) >> 1;
                ref readonly var op = ref _compiled[_opIndex[id]];
                if (op.Kind != OperationKind.Get || op.Value != _state)
                {
                    entry = _next[entry];
                    continue;
                }

                // Lifting it is the only move this node needs: if it fails, so does the node.
                lifted = TryLift(id, forced: true);
            }
            else
            {
                var id = (entry - 2) >> 1;
                if (!TryLift(id, forced: false))
                {
                    entry = _next[entry];
                    continue;
                }

                lifted = true;
            }

            if (lifted)
            {
                if (_linearizedReturned == _returnedCount)
                {
                    return new SearchOutcome(CheckOutcome.Linearizable, _explored, _stackIds[.._depth], null);
                }

                entry = _next[Head];
                scanning = true;
            }
            else if (Backtrack() is { } resumeAt)
            {
                entry = resumeAt;
                scanning = false;
            }
            else
            {
                return new SearchOutcome(CheckOutcome.NotLinearizable, _explored, _best[.._bestLength], null);
            }
        }

        SearchOutcome GiveUp(string reason)
        {
            var prefix = _bestIsOnStack ? _stackIds[.._depth] : _best[.._bestLength];
            return new SearchOutcome(CheckOutcome.Unknown, _explored - 1, prefix, reason);
        }
    }

    /// <summary>
    /// Linearizes operation <paramref name="id"/> next, unless the model rejects it or the resulting (linearized
    /// set, state) pair was explored before.
    /// </summary>
    /// <param name="id">The operation, whose call is before the first outstanding return.</param>
    /// <param name="forced">
    /// Whether it is a read of the current value. Such a read can always go first: in any linearization from here
    /// it could be moved to the front, since a read changes nothing and everything that returned before its call
    /// is linearized already. So trying the alternatives after it fails would only repeat work.
    /// </param>
    private bool TryLift(int id, bool forced)
    {
        var nextState = _model.Step(_state, _compiled[_opIndex[id]]);
        if (nextState == RegisterModel.Rejected)
        {
            return false;
        }

        _bits[id >> 6] |= 1UL << id;
        _setHash ^= _zobrist[id];
        if (!_cache.Add(_bits, _setHash, nextState))
        {
            _bits[id >> 6] &= ~(1UL << id);
            _setHash ^= _zobrist[id];
            return false;
        }

        _stackIds[_depth] = id;
        _stackStates[_depth] = _state;
        _stackForced[_depth] = forced;
        _depth++;
        _state = nextState;
        Lift(2 + (2 * id));
        if (!_pending[id])
        {
            _linearizedReturned++;
        }

        if (_depth > _bestLength)
        {
            _bestIsOnStack = true;
        }

        return true;
    }

    /// <summary>
    /// Undoes choices up to and including the latest one that has alternatives left, and returns the node to try
    /// next in its place, or null when there is no choice left to undo (the history is not linearizable).
    /// </summary>
    private int? Backtrack()
    {
        if (_bestIsOnStack)
        {
            // The longest prefix is copied out lazily, on the first backtrack from a new maximum depth, and only
            // from where the stack departs from the copy: the total copied is bounded by the number of backtracks.
            Array.Copy(_stackIds, _sameAsBest, _best, _sameAsBest, _depth - _sameAsBest);
            _bestLength = _depth;
            _bestIsOnStack = false;
            _sameAsBest = _depth;
        }

        while (_depth > 0)
        {
            _depth--;
            _sameAsBest = Math.Min(_sameAsBest, _depth);
            var id = _stackIds[_depth];
            _state = _stackStates[_depth];
            _bits[id >> 6] &= ~(1UL << id);
            _setHash ^= _zobrist[id];
            if (!_pending[id])
            {
                _linearizedReturned--;
            }

            var call = 2 + (2 * id);
            Unlift(call);
            if (!_stackForced[_depth])
            {
                return _next[call];
            }
        }

        return null;
    }

    // Dancing links: a removed node keeps its own pointers, so undoing removals in reverse order restores the list.
    private void Lift(int call)
    {
        Remove(call);
        Remove(call + 1);
    }

    private void Unlift(int call)
    {
        Restore(call + 1);
        Restore(call);
    }

    private void Remove(int node)
    {
        _next[_prev[node]] = _next[node];
        _prev[_next[node]] = _prev[node];
    }

    private void Restore(int node)
    {
        _next[_prev[node]] = node;
        _prev[_next[node]] = node;
    }

    private static Operation[] SortByCallTime(IReadOnlyList<Operation> subHistory)
    {
        var ops = subHistory.ToArray();
        var order = Enumerable.Range(0, ops.Length).ToArray();
        Array.Sort(order, (a, b) =>
        {
            var c = ops[a].CallTime.CompareTo(ops[b].CallTime);
            if (c == 0)
            {
                c = (ops[a].ReturnTime ?? long.MaxValue).CompareTo(ops[b].ReturnTime ?? long.MaxValue);
            }

            return c != 0 ? c : a.CompareTo(b);
        });
        return Array.ConvertAll(order, i => ops[i]);
    }

    /// <summary>
    /// Leaves out pending operations that cannot matter, before the search. Every pending operation makes the
    /// search branch (lift it here, or later, or never), so dropping the common case of a timed-out write that
    /// nobody observed keeps the search near-linear.
    /// </summary>
    /// <remarks>
    /// Sound because pending operations may be left out of a linearization: if one that is dropped here appeared
    /// in a linearization, removing it leaves a valid linearization, since the operation after it could not have
    /// observed its effect (no read returns the value it writes, and no increment can build on it).
    /// </remarks>
    private static Inclusion[] DecideInclusion(Operation[] ops, ModelOperation[] compiled, RegisterModel model)
    {
        var readValues = new HashSet<int>();
        var readsANumber = false;
        var increments = 0;
        for (var i = 0; i < ops.Length; i++)
        {
            if (ops[i].Kind == OperationKind.Increment)
            {
                increments++;
            }
            else if (ops[i].Kind == OperationKind.Get && ops[i].ReturnTime is not null)
            {
                readValues.Add(compiled[i].Value);
                readsANumber |= compiled[i].Value != RegisterModel.Absent && model.IsNumber(compiled[i].Value);
            }
        }

        var inclusion = new Inclusion[ops.Length];
        for (var i = 0; i < ops.Length; i++)
        {
            if (ops[i].ReturnTime is not null)
            {
                continue;
            }

            var observable = ops[i].Kind switch
            {
                OperationKind.Get => false,
                OperationKind.Put => readValues.Contains(compiled[i].Value) || (model.IsNumber(compiled[i].Value) && increments > 0),
                OperationKind.Delete => readValues.Contains(RegisterModel.Absent) || increments > 0,
                _ => readsANumber || increments > 1,
            };
            if (!observable)
            {
                inclusion[i] = ops[i].Kind == OperationKind.Get ? Inclusion.PendingRead : Inclusion.PendingUnobservable;
            }
        }

        return inclusion;
    }

    /// <summary>
    /// Call and return nodes in time order. At equal times calls come first, so operations that touch at an
    /// instant count as concurrent (the more permissive reading of an ambiguous clock). Pending returns, at
    /// +infinity, come after every real return, which the search's success test relies on.
    /// </summary>
    private int[] SortEvents()
    {
        var count = _opIndex.Length;
        var nodes = new int[2 * count];
        var times = new long[2 * count];
        for (var id = 0; id < count; id++)
        {
            var index = _opIndex[id];
            nodes[2 * id] = 2 + (2 * id);
            times[2 * id] = _ops[index].CallTime;
            nodes[(2 * id) + 1] = 3 + (2 * id);
            times[(2 * id) + 1] = _ops[index].ReturnTime ?? long.MaxValue;
        }

        var order = Enumerable.Range(0, 2 * count).ToArray();
        Array.Sort(order, (a, b) =>
        {
            var c = times[a].CompareTo(times[b]);
            if (c != 0)
            {
                return c;
            }

            // Even positions are calls: a call before a return; among returns, real ones before pending ones.
            c = (a & 1).CompareTo(b & 1);
            if (c != 0)
            {
                return c;
            }

            c = _pending[a >> 1].CompareTo(_pending[b >> 1]);
            return c != 0 ? c : a.CompareTo(b);
        });
        return Array.ConvertAll(order, i => nodes[i]);
    }

    private static ulong SplitMix64(ref ulong state)
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    private string Explain(SearchOutcome outcome)
    {
        var sb = new StringBuilder();
        var verdict = outcome.Outcome == CheckOutcome.NotLinearizable ? "is NOT linearizable" : "is UNKNOWN";
        sb.Append(CultureInfo.InvariantCulture, $"Key \"{_key}\" {verdict}: {Count(_ops.Length, "operation")}, {Count(outcome.Explored, "search state")} explored.");
        if (outcome.GiveUpReason is { } reason)
        {
            sb.AppendLine().Append("The checker could not decide: ").Append(reason).Append('.');
        }

        // Replay the prefix to know the state after each step.
        var prefixStep = new int[_ops.Length];
        var states = new int[outcome.Prefix.Length];
        var state = RegisterModel.Absent;
        var linearized = new bool[_opIndex.Length];
        for (var step = 0; step < outcome.Prefix.Length; step++)
        {
            var id = outcome.Prefix[step];
            linearized[id] = true;
            prefixStep[_opIndex[id]] = step + 1;
            state = _model.Step(state, _compiled[_opIndex[id]]);
            states[step] = state;
        }

        var (stuck, candidates) = FindStuckPoint(linearized);
        var limit = _options.MaxOperationsInExplanation;

        sb.AppendLine().AppendLine().Append("Sub-history sorted by call time ([call, return], inf = never returned):");
        var focus = stuck >= 0 ? _opIndex[stuck] : 0;
        var start = Math.Clamp(focus - (limit / 2), 0, Math.Max(0, _ops.Length - limit));
        var end = Math.Min(_ops.Length, start + limit);
        if (start > 0)
        {
            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  ... {Count(start, "earlier operation")} not shown");
        }

        for (var i = start; i < end; i++)
        {
            var note = _inclusion[i] switch
            {
                Inclusion.PendingRead => "ignored: a read that never returned",
                Inclusion.PendingUnobservable => "ignored: never returned and its effect is never observed",
                _ when prefixStep[i] > 0 => $"prefix step {prefixStep[i]}",
                _ when _ops[i].ReturnTime is null => "not in prefix (may be left out: never returned)",
                _ => "not in prefix",
            };

            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  #{i,-5} {_ops[i],-60}  {note}");
        }

        if (end < _ops.Length)
        {
            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  ... {Count(_ops.Length - end, "later operation")} not shown");
        }

        var linearizedReturned = outcome.Prefix.Count(id => !_pending[id]);
        sb.AppendLine().AppendLine()
          .Append(CultureInfo.InvariantCulture, $"Longest linearizable prefix found: {Count(outcome.Prefix.Length, "operation")} ({linearizedReturned} of the {_returnedCount} that returned), value after it: {_model.Describe(state)}.");
        var firstStep = Math.Max(0, outcome.Prefix.Length - limit);
        if (firstStep > 0)
        {
            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  ... first {Count(firstStep, "step")} not shown");
        }

        for (var step = firstStep; step < outcome.Prefix.Length; step++)
        {
            var index = _opIndex[outcome.Prefix[step]];
            sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  {step + 1,5}. #{index,-5} {_ops[index],-60}  => {_model.Describe(states[step])}");
        }

        if (stuck >= 0)
        {
            var exhausted = outcome.Outcome == CheckOutcome.NotLinearizable;
            var stuckIndex = _opIndex[stuck];
            sb.AppendLine().AppendLine()
              .Append(exhausted ? "It cannot be extended" : "The search had not found how to extend it")
              .Append(CultureInfo.InvariantCulture, $": of the operations left, #{stuckIndex} returns first (at {_ops[stuckIndex].ReturnTime}), so it or one called by then comes next:");
            foreach (var id in candidates.Take(limit))
            {
                var index = _opIndex[id];
                var next = _model.Step(state, _compiled[index]);
                var why = next == RegisterModel.Rejected
                    ? $"impossible: {_model.WhyRejected(state, _compiled[index])}"
                    : $"possible (value becomes {_model.Describe(next)}){(exhausted ? ", but no continuation works" : "")}";
                sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  #{index,-5} {_ops[index],-60}  {why}");
            }

            if (candidates.Count > limit)
            {
                sb.AppendLine().Append(CultureInfo.InvariantCulture, $"  ... {Count(candidates.Count - limit, "more candidate")} not shown");
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// After a prefix, the operation that blocks the search (the earliest return not yet linearized) and the
    /// operations that could go next (called before that return), or (-1, []) when nothing blocks it.
    /// </summary>
    private (int Stuck, List<int> Candidates) FindStuckPoint(bool[] linearized)
    {
        var candidates = new List<int>();
        foreach (var node in _eventOrder)
        {
            var id = (node - 2) >> 1;
            if (linearized[id])
            {
                continue;
            }

            if ((node & 1) == 1)
            {
                return _pending[id] ? (-1, []) : (id, candidates);
            }

            candidates.Add(id);
        }

        return (-1, []);
    }

    private static string Count(long n, string noun) =>
        string.Create(CultureInfo.InvariantCulture, $"{n} {noun}{(n == 1 ? "" : "s")}");

    private sealed record SearchOutcome(CheckOutcome Outcome, long Explored, int[] Prefix, string? GiveUpReason);
}
