using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

// The end of a run: heal everything, then require a leader within the bound, a quiet converged cluster, and a
// linearizable history.
public sealed partial class ClusterSimulator
{
    private Phase _phase = Phase.Chaos;
    private long _healTime;
    private long _stableLeaderTime = -1;

    private enum Phase : byte
    {
        Chaos,
        Settling,
    }

    private void OnEndChaos()
    {
        _phase = Phase.Settling;
        _healTime = _now;
        _network.HealAll();
        _network.LossRate = 0;
        _trace.Add(_now, "heal everything", 0, "no more faults, membership changes or new client operations");
        foreach (var node in _nodes)
        {
            if (node.Status == NodeStatus.Crashed)
            {
                Restart(node);
            }
        }

        Schedule(_now + _options.QuietDeadlineMs * MicrosPerMs, new SimEvent(EventKind.Deadline));
    }

    private void CheckSettling()
    {
        var leader = StableLeader();
        if (_stableLeaderTime < 0)
        {
            var ticks = (int)((_now - _healTime + _tickMicros - 1) / _tickMicros);
            if (leader is not null)
            {
                _stableLeaderTime = _now;
                _stats.TicksToLeaderAfterHeal = ticks;
                _trace.Add(_now, "stable leader", leader.Id, $"{ticks} ticks after healing");
            }

            if (ticks > _options.LivenessBoundTicks && leader is null)
            {
                throw new SimulationViolation(FailureKind.Liveness,
                    $"no leader followed by every voter within {_options.LivenessBoundTicks} ticks after healing: {DescribeCluster()}");
            }
        }

        if (leader is not null && WhyNotQuiet(leader) is null)
        {
            Finish(leader);
        }
    }

    /// <summary>A running leader of the latest membership that every voter of it follows in the same term.</summary>
    private SimNode? StableLeader()
    {
        var leader = FindLeader();
        if (leader is null || !_latestMembership.IsVoter(leader.Id))
        {
            return null;
        }

        var raft = leader.Raft!;
        foreach (var voter in _latestMembership.Voters)
        {
            if (NodeById(voter) is not { IsRunning: true } node || node.Raft!.Leader != leader.Id || node.Raft.Term != raft.Term)
            {
                return null;
            }
        }

        return leader;
    }

    private string? WhyNotQuiet(SimNode leader)
    {
        var raft = leader.Raft!;
        if (raft.CommitIndex != raft.LastIndex)
        {
            return $"leader n{leader.Id} has uncommitted entries ({raft.CommitIndex} < {raft.LastIndex})";
        }

        if (!raft.Membership.Equals(_latestMembership))
        {
            return $"leader n{leader.Id} has not applied the latest membership";
        }

        foreach (var id in _latestMembership.All)
        {
            if (NodeById(id) is not { IsRunning: true } node)
            {
                return $"member n{id} is not running";
            }

            if (node.Applied != raft.CommitIndex)
            {
                return $"member n{id} applied {node.Applied}, leader committed {raft.CommitIndex}";
            }
        }

        foreach (var client in _clients)
        {
            if (client.State is ClientState.WaitingPut or ClientState.WaitingGet)
            {
                return $"client c{client.Id} still waits for {client.Kind} {client.Key} at n{client.Node}";
            }
        }

        return null;
    }

    private void OnDeadline()
    {
        var leader = StableLeader();
        var why = leader is null ? "no stable leader" : WhyNotQuiet(leader);
        throw new SimulationViolation(FailureKind.Liveness,
            $"not settled {_options.QuietDeadlineMs} ms after healing: {why}; {DescribeCluster()}");
    }

    private void Finish(SimNode leader)
    {
        _finished = true;
        var raft = leader.Raft!;
        var expected = leader.Kv.Serialize();
        _trace.Add(_now, "settled", leader.Id, $"commit={raft.CommitIndex} {_latestMembership} state={leader.Kv}");

        foreach (var id in _latestMembership.All)
        {
            var node = NodeById(id)!;
            if (!node.Kv.Serialize().AsSpan().SequenceEqual(expected))
            {
                throw new SimulationViolation(FailureKind.Convergence, $"n{id} settled with state {node.Kv}, leader n{leader.Id} with {leader.Kv}");
            }

            if (!node.Raft!.Membership.Equals(_latestMembership))
            {
                throw new SimulationViolation(FailureKind.Convergence, $"n{id} settled with membership {node.Raft.Membership}, expected {_latestMembership}");
            }
        }

        // No entry once committed is lost: the settled log covers everything ever seen committed...
        if (_invariants.MaxCommitted > raft.CommitIndex)
        {
            throw new SimulationViolation(FailureKind.Convergence,
                $"index {_invariants.MaxCommitted} was committed once, but the settled cluster only has {raft.CommitIndex}");
        }

        // ...and the settled state is exactly the committed entries applied in order.
        if (_invariants.ReferenceState(raft.CommitIndex) is { } reference && !reference.Serialize().AsSpan().SequenceEqual(expected))
        {
            throw new SimulationViolation(FailureKind.Convergence, $"settled state {leader.Kv} differs from the committed entries applied in order: {reference}");
        }

        Mix(BitConverter.ToUInt64(System.Security.Cryptography.SHA256.HashData(expected)));
        var history = BuildHistory(raft.CommitIndex);
        _finalHistory = history;
        _stats.HistoryOperations = history.Count;
        if (_options.HistoryChecker is not { } check)
        {
            return;
        }

        var (verdict, detail) = check(history);
        if (verdict == HistoryVerdict.NotLinearizable)
        {
            throw new SimulationViolation(FailureKind.NotLinearizable, $"client history ({history.Count} operations) is not linearizable: {detail}");
        }

        if (verdict == HistoryVerdict.Unknown)
        {
            throw new SimulationViolation(FailureKind.LinearizabilityUnknown,
                $"the checker could not decide the client history ({history.Count} operations) within its effort bound: {detail}");
        }
    }

    private string DescribeCluster() =>
        string.Join("; ", _nodes.Where(n => n.Status != NodeStatus.Removed).Select(n => n.Raft is { } r
            ? $"n{n.Id} {r.Role} t{r.Term} leader={r.Leader} commit={r.CommitIndex} last={r.LastIndex} applied={n.Applied}"
            : $"n{n.Id} {n.Status}")) + $"; latest membership {_latestMembership}; network {_network.Describe()}";
}
