using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

// The nemesis (crashes, partitions, leadership transfers) and the operator (membership changes).
public sealed partial class ClusterSimulator
{
    private Membership _latestMembership;
    private ulong _latestMembershipIndex;
    private int _maxCrashed;
    private ulong _spareNodeId;

    private void StartNemesis()
    {
        ScheduleNextFault();
        if (_options.MembershipChanges)
        {
            ScheduleMembership();
        }
    }

    private void ScheduleNextFault() =>
        Schedule(_now + (_options.MinFaultIntervalMs + _random.Next(_options.MaxFaultIntervalMs - _options.MinFaultIntervalMs + 1)) * MicrosPerMs,
            new SimEvent(EventKind.Fault));

    private void ScheduleMembership() =>
        Schedule(_now + (_options.MinMembershipIntervalMs + _random.Next(_options.MaxMembershipIntervalMs - _options.MinMembershipIntervalMs + 1)) * MicrosPerMs,
            new SimEvent(EventKind.Membership));

    private void OnFault()
    {
        if (_phase != Phase.Chaos)
        {
            return;
        }

        var weights = _options.Faults;
        var roll = weights.Total > 0 ? _random.Next(weights.Total) : -1;
        if (roll < 0)
        {
            return;
        }

        if ((roll -= weights.Crash) < 0)
        {
            CrashSomeNode();
        }
        else if ((roll -= weights.Partition) < 0)
        {
            PartitionRandomly();
        }
        else if ((roll -= weights.IsolateLeader) < 0)
        {
            IsolateLeader();
        }
        else if ((roll -= weights.Asymmetric) < 0)
        {
            CutAsymmetrically();
        }
        else if ((roll -= weights.Heal) < 0)
        {
            _network.HealAll();
            _trace.Add(_now, "heal network", 0);
        }
        else
        {
            TransferLeadership();
        }

        ScheduleNextFault();
    }

    private void CrashSomeNode()
    {
        // Leaders are where the interesting failures are: pick the leader a third of the time.
        var leader = FindLeader();
        var running = _nodes.Where(n => n.IsRunning).ToList();
        var victim = leader is not null && _random.Next(3) == 0 ? leader : running.Count > 0 ? running[_random.Next(running.Count)] : null;
        if (victim is not null)
        {
            CrashForAWhile(victim);
        }
    }

    private void CrashForAWhile(SimNode victim)
    {
        if (_nodes.Count(n => n.Status == NodeStatus.Crashed) >= _maxCrashed)
        {
            return;
        }

        _stats.Crashes++;
        Crash(victim, NodeStatus.Crashed);
        var downtime = (_options.MinDowntimeMs + _random.Next(_options.MaxDowntimeMs - _options.MinDowntimeMs + 1)) * MicrosPerMs;
        Schedule(_now + downtime, new SimEvent(EventKind.Restart) { Node = victim.Id, Generation = victim.Generation });
    }

    /// <summary>Leader churn: a leader that fails soon after its election leaves entries of its term on few nodes.</summary>
    private void MaybeChurnLeader(SimNode leader)
    {
        if (_phase != Phase.Chaos || _options.NewLeaderFailureChance <= 0 || _random.NextDouble() >= _options.NewLeaderFailureChance)
        {
            return;
        }

        var delay = _random.NextInt64(_options.MaxNewLeaderFailureDelayMs * MicrosPerMs + 1);
        Schedule(_now + delay, new SimEvent(EventKind.FailNewLeader) { Node = leader.Id, Generation = leader.Generation, Succeeded = _random.Next(2) == 0 });
    }

    private void OnFailNewLeader(SimEvent e)
    {
        var node = NodeById(e.Node)!;
        if (_phase != Phase.Chaos || node.Generation != e.Generation || !node.IsRunning)
        {
            return;
        }

        if (e.Succeeded)
        {
            _trace.Add(_now, "leader churn: crash", node.Id);
            CrashForAWhile(node);
        }
        else
        {
            _network.Partition([node.Id], LiveIds().Where(id => id != node.Id));
            StartPartition($"leader churn: isolate n{node.Id}");
        }
    }

    private List<ulong> LiveIds() => _nodes.Where(n => n.Status != NodeStatus.Removed).Select(n => n.Id).ToList();

    private void PartitionRandomly()
    {
        var ids = LiveIds();
        if (ids.Count < 2)
        {
            return;
        }

        Shuffle(ids);
        var minority = 1 + _random.Next(ids.Count / 2);
        var side = ids.Take(minority).ToList();
        _network.Partition(side, ids.Skip(minority));
        StartPartition($"partition [{string.Join(",", side.Order())}] | rest");
    }

    private void IsolateLeader()
    {
        if (FindLeader() is not { } leader)
        {
            PartitionRandomly();
            return;
        }

        _network.Partition([leader.Id], LiveIds().Where(id => id != leader.Id));
        StartPartition($"isolate leader n{leader.Id}");
    }

    private void CutAsymmetrically()
    {
        var ids = LiveIds();
        var leader = FindLeader();
        var pattern = _random.Next(3);
        if (leader is not null && pattern == 0)
        {
            // The leader still reaches everyone but hears nothing back.
            foreach (var id in ids)
            {
                _network.Cut(id, leader.Id);
            }

            StartPartition($"n{leader.Id} (leader) cannot hear anyone");
        }
        else if (leader is not null && pattern == 1)
        {
            // Everyone reaches the leader but it reaches nobody.
            foreach (var id in ids)
            {
                _network.Cut(leader.Id, id);
            }

            StartPartition($"n{leader.Id} (leader) cannot reach anyone");
        }
        else
        {
            var links = 1 + _random.Next(Math.Max(1, ids.Count));
            for (var i = 0; i < links && ids.Count >= 2; i++)
            {
                var from = ids[_random.Next(ids.Count)];
                var to = ids[_random.Next(ids.Count)];
                _network.Cut(from, to);
            }

            StartPartition("random one-way cuts");
        }
    }

    private void StartPartition(string what)
    {
        _stats.Partitions++;
        _trace.Add(_now, what, 0, _network.Describe());
        var duration = (_options.MinPartitionMs + _random.Next(_options.MaxPartitionMs - _options.MinPartitionMs + 1)) * MicrosPerMs;
        Schedule(_now + duration, new SimEvent(EventKind.HealNetwork));
    }

    private void TransferLeadership()
    {
        if (FindLeader() is not { } leader)
        {
            return;
        }

        var others = leader.Raft!.Membership.Voters.Where(v => v != leader.Id).ToList();
        if (others.Count == 0)
        {
            return;
        }

        var target = others[_random.Next(others.Count)];
        var started = leader.Raft.TransferLeadership(target);
        _stats.TransfersRequested++;
        _trace.Add(_now, "transfer leadership", leader.Id, $"to n{target}: {(started ? "started" : "refused")}");
        Touch(leader);
    }

    /// <summary>The running leader with the highest term, if any (a deposed leader may not know it yet).</summary>
    private SimNode? FindLeader()
    {
        SimNode? best = null;
        foreach (var node in _nodes)
        {
            if (node.IsRunning && node.Raft!.Role == Role.Leader && (best is null || node.Raft.Term > best.Raft!.Term))
            {
                best = node;
            }
        }

        return best;
    }

    private void Shuffle(List<ulong> items)
    {
        for (var i = items.Count - 1; i > 0; i--)
        {
            var j = _random.Next(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // Membership: the operator adds a learner, promotes it once caught up, then removes a voter (sometimes the leader);
    // now and then it moves a member (an UpdateContext change)
    // ----------------------------------------------------------------------------------------------------------

    /// <summary>Tracks the newest applied membership anywhere (the one as of the highest applied index).</summary>
    private void UpdateLatestMembership(SimNode node)
    {
        if (node.Applied <= _latestMembershipIndex)
        {
            return;
        }

        var membership = node.Raft!.Membership;
        _latestMembershipIndex = node.Applied;
        if (membership.Equals(_latestMembership))
        {
            return;
        }

        _trace.Add(_now, "membership", node.Id, $"{membership} as of {node.Applied}");
        _latestMembership = membership;
        ShutDownRemovedNodes();
    }

    /// <summary>A node whose removal is applied is shut down a little later, as an operator would.</summary>
    private void ShutDownRemovedNodes()
    {
        foreach (var node in _nodes)
        {
            if (_latestMembership.Contains(node.Id))
            {
                node.WasMember = true;
            }
            else if (node.WasMember && !node.ShutdownScheduled && node.Status != NodeStatus.Removed)
            {
                node.ShutdownScheduled = true;
                Schedule(_now + _random.NextInt64(200 * MicrosPerMs), new SimEvent(EventKind.Shutdown) { Node = node.Id });
            }
        }
    }

    private void OnShutdown(SimEvent e)
    {
        var node = NodeById(e.Node)!;
        if (node.Status == NodeStatus.Removed)
        {
            return;
        }

        if (_options.KeepRemovedUntilLastVoterApplied && _latestMembership.Voters.Count == 1 && !ShowsLatestMembership(_latestMembership.Voters.Min))
        {
            // Apply-on-commit's known limit (etcd's too): a voter left alone by the removal of the other of two only
            // leads once it knows the removal committed; until then it needs the removed node's vote. A careful operator
            // stops the removed node only once the last voter shows the new membership.
            Schedule(_now + 50 * MicrosPerMs, new SimEvent(EventKind.Shutdown) { Node = node.Id });
            return;
        }

        _stats.NodesRemoved++;
        Crash(node, NodeStatus.Removed);
        _disk.Wipe(node.Id);
    }

    private bool ShowsLatestMembership(ulong id) =>
        NodeById(id) is { IsRunning: true } node && node.Raft!.Membership.Equals(_latestMembership);

    private void OnMembership()
    {
        if (_phase != Phase.Chaos)
        {
            return;
        }

        ScheduleMembership();
        if (FindLeader() is not { } leader)
        {
            return;
        }

        var raft = leader.Raft!;
        var membership = raft.Membership;
        ConfChange? change = null;
        if (membership.Learners.Count > 0)
        {
            var learner = membership.Learners.Min;
            var progress = raft.GetStatus().Progress.FirstOrDefault(p => p.Id == learner);
            if (progress.Id == learner && progress.Match + 5 >= raft.LastIndex)
            {
                change = new ConfChange(ConfChangeType.PromoteLearner, learner);
            }
            else if (_random.Next(10) == 0)
            {
                change = new ConfChange(ConfChangeType.Remove, learner);
            }
        }
        else if (membership.Voters.Count > _options.Nodes
                 || (_options.ShrinkChance > 0 && membership.Voters.Count > _options.MinVoters && _random.NextDouble() < _options.ShrinkChance))
        {
            var others = membership.Voters.Where(v => v != leader.Id).ToList();
            var victim = _random.NextDouble() < _options.RemoveLeaderChance || others.Count == 0 ? leader.Id : others[_random.Next(others.Count)];
            change = new ConfChange(ConfChangeType.Remove, victim);
        }
        else if (_random.Next(2) == 0)
        {
            change = new ConfChange(ConfChangeType.AddLearner, SpareNode());
        }
        else if (_random.Next(3) == 0)
        {
            // A member moves: only its context changes, and every node must end up agreeing on it.
            var members = membership.All.ToList();
            var moved = members[_random.Next(members.Count)];
            change = new ConfChange(ConfChangeType.UpdateContext, moved, $"n{moved}-moved-at-{_now}");
        }

        if (change is not { } c)
        {
            return;
        }

        var result = raft.ProposeConfChange(c);
        if (result.Accepted)
        {
            _stats.ConfChangesProposed++;
            if (_options.FailAfterChangeChance > 0 && _random.NextDouble() < _options.FailAfterChangeChance)
            {
                // The leader fails right after appending the change: before or after persisting it, before or after
                // sending it (the same failure as a churned new leader: a crash or an isolation).
                var delay = _random.NextInt64(_options.MaxFailAfterChangeDelayMs * MicrosPerMs + 1);
                Schedule(_now + delay, new SimEvent(EventKind.FailNewLeader) { Node = leader.Id, Generation = leader.Generation, Succeeded = _random.Next(2) == 0 });
            }
        }

        _trace.Add(_now, "propose conf change", leader.Id, $"{c} -> {result.Status} {result.Index}/{result.Term} {result.Reason}");
        Touch(leader);
    }

    /// <summary>A started node that was never a member: reused until an addition of it commits, else a fresh one.</summary>
    private ulong SpareNode()
    {
        if (NodeById(_spareNodeId) is { WasMember: false, Status: not NodeStatus.Removed })
        {
            return _spareNodeId;
        }

        _spareNodeId = (ulong)_nodes.Count + 1;
        _stats.NodesAdded++;
        AddNode(_spareNodeId, bootstrap: null);
        return _spareNodeId;
    }
}
