using Dcache.Raft;

namespace Dcache.TestSupport.Simulation;

/// <summary>
/// A deterministic discrete-event simulation of a Raft cluster: one thread, virtual time (microseconds), and one
/// seeded <see cref="System.Random"/> deciding everything (message fates, disk latencies, faults, client choices, and
/// the seed of every node's own generator). Each node runs the host loop of <see cref="Ready"/> faithfully; the
/// invariants are checked after every event. See <see cref="Run"/>.
/// </summary>
public sealed partial class ClusterSimulator
{
    private const long MicrosPerMs = 1000;
    private const ulong GenesisIndex = 1;
    private const int SnapshotsKept = 3;

    private readonly SimulationOptions _options;
    private readonly Random _random;
    private readonly EventQueue<SimEvent> _queue = new();
    private readonly SimulatedNetwork _network;
    private readonly ISimulatedDisk _disk;
    private readonly InvariantChecker _invariants;
    private readonly SimulationTrace _trace;
    private readonly SimulationStats _stats = new();
    private readonly List<SimNode> _nodes = []; // node id i lives at index i - 1
    private readonly long _tickMicros;
    private readonly Func<ulong, SimNode?> _nodeById;
    private long _now;
    private bool _finished;
    private ulong _fingerprint = 14695981039346656037UL;

    private ClusterSimulator(SimulationOptions options)
    {
        if (options.Nodes < 1 || options.Clients < 1 || options.Keys < 1)
        {
            throw new ArgumentException("a simulation needs at least one node, client and key", nameof(options));
        }

        _options = options;
        _random = new Random(options.Seed);
        _tickMicros = options.TickMs * MicrosPerMs;
        _network = new SimulatedNetwork(_random, options.MinMessageDelayMs * MicrosPerMs, options.MaxMessageDelayMs * MicrosPerMs);
        _disk = options.DiskFactory?.Invoke() ?? new MemorySimulatedDisk();
        _invariants = new InvariantChecker(options.ProtocolChecks);
        _trace = new SimulationTrace(options.TraceLength, options.FullTrace);
        _nodeById = NodeById;
        _latestMembership = Membership.Of(Enumerable.Range(1, options.Nodes).Select(i => (ulong)i));
    }

    private enum EventKind : byte
    {
        Tick,
        Deliver,
        ReadyDurable,
        SnapshotReport,
        UnreachableReport,
        ClientWake,
        ClientTimeout,
        Fault,
        HealNetwork,
        Restart,
        FailNewLeader,
        Shutdown,
        Membership,
        EndChaos,
        Deadline,
    }

    /// <summary>Runs one simulation to the end (or to its first failure) and reports what happened.</summary>
    public static SimulationResult Run(SimulationOptions options) => new ClusterSimulator(options).Execute();

    private SimulationResult Execute()
    {
        SimulationFailure? failure = null;
        try
        {
            Start();
            while (!_finished)
            {
                if (!_queue.TryDequeue(out var next, out var time))
                {
                    throw new SimulationViolation(FailureKind.Liveness, "no events left before the cluster settled");
                }

                _now = time;
                _stats.Events++;
                if (_stats.Events > _options.MaxEvents)
                {
                    throw new SimulationViolation(FailureKind.Liveness, $"more than {_options.MaxEvents} events: a livelock or a message storm");
                }

                Mix((ulong)time);
                Mix((ulong)next.Kind << 56 | next.Node);
                _current = next;
                Handle(next);
                if (_phase == Phase.Settling && !_finished)
                {
                    CheckSettling();
                }
            }
        }
        catch (SimulationViolation violation)
        {
            failure = new SimulationFailure(violation.Kind, violation.Message + CurrentEventNote(), _now, _trace.Dump());
        }
        catch (Exception exception)
        {
            failure = new SimulationFailure(FailureKind.Exception, exception + CurrentEventNote(), _now, _trace.Dump());
        }

        _stats.VirtualMicros = _now;
        _stats.LeaderElections = _invariants.LeadersElected;
        _stats.PreviousTermCommits = _invariants.PreviousTermCommits;
        return new SimulationResult
        {
            Seed = _options.Seed,
            Failure = failure,
            Stats = _stats,
            History = _finalHistory,
            Fingerprint = _fingerprint,
        };
    }

    private SimEvent? _current;

    /// <summary>Names the event being handled when a check failed (ticks and routine messages are not in the short trace).</summary>
    private string CurrentEventNote() => _current is not { } e ? "" : e.Kind switch
    {
        EventKind.Deliver => $" [while n{e.Node} handled {e.Message}]",
        EventKind.ClientWake or EventKind.ClientTimeout => $" [while handling {e.Kind} of c{e.Client}]",
        _ => $" [while handling {e.Kind}{(e.Node != 0 ? " of n" + e.Node : "")}]",
    };

    private void Start()
    {
        _network.LossRate = _random.NextDouble() * _options.MaxLossRate;
        _network.DuplicateRate = _random.NextDouble() * _options.MaxDuplicateRate;
        _maxInflightMessages = _options.MaxInflightMessages > 0 ? _options.MaxInflightMessages : 1 + _random.Next(16);
        _maxCrashed = _options.MaxCrashedNodes >= 0 ? _options.MaxCrashedNodes : (_options.Nodes - 1) / 2;
        _trace.Add(0, "start", 0, $"seed={_options.Seed} nodes={_options.Nodes} loss={_network.LossRate:0.000} dup={_network.DuplicateRate:0.000} inflight={_maxInflightMessages}");

        var bootstrap = _latestMembership;
        for (var id = 1UL; id <= (ulong)_options.Nodes; id++)
        {
            AddNode(id, bootstrap).WasMember = true;
        }

        if (_random.Next(2) == 0)
        {
            // Half the runs start with an immediate election, the others wait for an election timeout.
            var first = _nodes[_random.Next(_nodes.Count)];
            first.Raft!.Campaign();
            Touch(first);
        }

        StartClients();
        StartNemesis();
        Schedule(_options.ChaosMs * MicrosPerMs, new SimEvent(EventKind.EndChaos));
    }

    private void Handle(SimEvent e)
    {
        switch (e.Kind)
        {
            case EventKind.Tick:
                OnTick(e);
                break;
            case EventKind.Deliver:
                OnDeliver(e);
                break;
            case EventKind.ReadyDurable:
                OnReadyDurable(e);
                break;
            case EventKind.SnapshotReport:
                OnSnapshotReport(e);
                break;
            case EventKind.UnreachableReport:
                OnUnreachableReport(e);
                break;
            case EventKind.ClientWake:
                OnClientWake(e);
                break;
            case EventKind.ClientTimeout:
                OnClientTimeout(e);
                break;
            case EventKind.Fault:
                OnFault();
                break;
            case EventKind.HealNetwork:
                if (_phase == Phase.Chaos)
                {
                    _network.HealAll();
                    _trace.Add(_now, "heal network", 0);
                }

                break;
            case EventKind.Restart:
                OnRestart(e);
                break;
            case EventKind.FailNewLeader:
                OnFailNewLeader(e);
                break;
            case EventKind.Shutdown:
                OnShutdown(e);
                break;
            case EventKind.Membership:
                OnMembership();
                break;
            case EventKind.EndChaos:
                OnEndChaos();
                break;
            case EventKind.Deadline:
                OnDeadline();
                break;
            default:
                throw new InvalidOperationException($"unknown event {e.Kind}");
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // Nodes: process lifecycle
    // ----------------------------------------------------------------------------------------------------------

    private int _maxInflightMessages;

    private SimNode? NodeById(ulong id) => id >= 1 && id <= (ulong)_nodes.Count ? _nodes[(int)(id - 1)] : null;

    private SimNode AddNode(ulong id, Membership? bootstrap)
    {
        if (id != (ulong)_nodes.Count + 1)
        {
            throw new InvalidOperationException($"node ids are handed out in order: expected {_nodes.Count + 1}, got {id}");
        }

        var genesis = bootstrap is not null && _options.GenesisSnapshot;
        var node = new SimNode(id)
        {
            SnapshotEvery = _options.MinSnapshotEvery + _random.Next(_options.MaxSnapshotEvery - _options.MinSnapshotEvery + 1),
            SnapshotKeep = _random.Next(_options.MaxSnapshotKeep + 1),
            Durable = bootstrap is null || genesis ? new MemoryStorage() : MemoryStorage.Bootstrap(bootstrap),
        };
        _nodes.Add(node);
        var storage = _disk.Create(id, genesis ? null : bootstrap);
        if (genesis)
        {
            // Index 1 is a snapshot of the empty state carrying the initial membership (see the option).
            var hardState = new HardState(GenesisIndex, 0, GenesisIndex);
            var snapshot = new SnapshotMetadata(GenesisIndex, GenesisIndex, bootstrap!);
            _disk.SaveSnapshotData(id, GenesisIndex, new KvStateMachine().Serialize());
            storage.Save(hardState, [], snapshot);
            node.Durable.Save(hardState, [], snapshot);
            _invariants.SeedGenesis(GenesisIndex, bootstrap!);
        }

        _trace.Add(_now, "node created", id, bootstrap is null ? "empty" : bootstrap.ToString());
        StartProcess(node, storage);
        return node;
    }

    /// <summary>Starts a node's process from its disk: the state machine from the latest snapshot, the core from the storage.</summary>
    private void StartProcess(SimNode node, IRaftStorage storage)
    {
        var snapshot = storage.Snapshot;
        node.Storage = storage;
        node.SyncedCommit = storage.InitialState().HardState.Commit;
        node.Kv = snapshot.Index == 0 ? new KvStateMachine() : KvStateMachine.Deserialize(LoadSnapshotData(node, snapshot.Index));
        node.Applied = snapshot.Index;
        node.AppliedTerm = snapshot.Term;
        node.SnapshotIndex = snapshot.Index;
        node.RecentSnapshots.Clear();
        node.RecentSnapshots.Enqueue(snapshot.Index);
        node.ReadyInProgress = null;
        var options = new RaftOptions
        {
            Id = node.Id,
            ElectionTicks = _options.ElectionTicks,
            HeartbeatTicks = _options.HeartbeatTicks,
            PreVote = true,
            CheckQuorum = true,
            MaxSizePerMessage = _options.MaxSizePerMessage,
            MaxInflightMessages = _maxInflightMessages,
            Applied = snapshot.Index,
            Mutation = _options.Mutation,
        };
        if (_options.MaxCommittedSizePerReady > 0)
        {
            options.MaxCommittedSizePerReady = _options.MaxCommittedSizePerReady;
        }

        node.Raft = new RaftNode(options, storage, new SeededRandom(_random.Next()));
        node.Status = NodeStatus.Running;
        node.Generation++;

        // A new incarnation: the observer starts from what the disk holds.
        node.ObservedRole = node.Raft.Role;
        node.ObservedTerm = node.Raft.Term;
        node.ObservedCommit = snapshot.Index;
        node.MembershipFloor = node.Raft.CommitIndex;
        node.SingleVoterCommitUpTo = 0;
        _invariants.ObserveAppliedMembership(node);
        node.LogTerms.Clear();
        node.LogTermsFirst = node.Raft.FirstLogIndex;
        if (node.Raft.Term < node.MaxSentTerm)
        {
            throw new SimulationViolation(FailureKind.Invariant,
                $"n{node.Id} restarted at term {node.Raft.Term} but had sent messages at term {node.MaxSentTerm}: its term was not durable before it spoke");
        }

        Schedule(_now + 1 + _random.NextInt64(_tickMicros), new SimEvent(EventKind.Tick) { Node = node.Id, Generation = node.Generation });
        Touch(node);
    }

    /// <summary>A crash: the process and everything not yet durable is gone; the disk stays.</summary>
    private void Crash(SimNode node, NodeStatus status)
    {
        _trace.Add(_now, status == NodeStatus.Removed ? "shutdown" : "crash", node.Id,
            node.Raft is { } raft ? $"{raft.Role} t{raft.Term} commit={raft.CommitIndex} last={raft.LastIndex} applied={node.Applied}" : null);
        node.Status = status;
        node.Generation++;
        node.Raft = null;
        node.ReadyInProgress = null;
        if (_options.LoseUnsyncedCommits && status == NodeStatus.Crashed && node.Storage is not null && node.Durable.HardState.Commit > node.SyncedCommit
            && _random.Next(2) == 0)
        {
            _disk.LoseUnsyncedCommit(node.Id, node.SyncedCommit);
            _trace.Add(_now, "lost unsynced commit", node.Id, $"{node.Durable.HardState.Commit} -> {node.SyncedCommit}");
            node.Durable.Save(node.Durable.HardState with { Commit = node.SyncedCommit }, [], null);
        }

        node.Storage?.Dispose();
        node.Storage = null;
        node.Kv = new KvStateMachine();
        foreach (var (_, proposal) in node.Proposals)
        {
            ProposalOutcomeUnknown(proposal);
        }

        node.Proposals.Clear();
        foreach (var read in node.Reads)
        {
            ReadFailed(read);
        }

        node.Reads.Clear();
    }

    private void OnRestart(SimEvent e)
    {
        var node = NodeById(e.Node)!;
        if (node.Status != NodeStatus.Crashed || node.Generation != e.Generation)
        {
            return;
        }

        Restart(node);
    }

    private void Restart(SimNode node)
    {
        var storage = _disk.Open(node.Id);
        VerifyDurableState(node, storage);
        _invariants.ForgetLostEntries(node, storage);
        _stats.Restarts++;
        _trace.Add(_now, "restart", node.Id, $"snapshot={storage.Snapshot.Index} last={storage.LastIndex} hs={storage.InitialState().HardState}");
        StartProcess(node, storage);
    }

    /// <summary>A reopened disk must hold exactly what the simulator saw made durable (a crash loses nothing Save returned from).</summary>
    private static void VerifyDurableState(SimNode node, IRaftStorage storage)
    {
        var expected = node.Durable;
        var problem =
            storage.Snapshot != expected.Snapshot ? $"snapshot {storage.Snapshot} != {expected.Snapshot}" :
            storage.InitialState().HardState != expected.HardState ? $"hard state {storage.InitialState().HardState} != {expected.HardState}" :
            storage.LastIndex != expected.LastIndex ? $"last index {storage.LastIndex} != {expected.LastIndex}" :
            storage.FirstIndex > expected.FirstIndex ? $"first index {storage.FirstIndex} > {expected.FirstIndex}" : null;
        for (var i = expected.FirstIndex; problem is null && i <= expected.LastIndex; i++)
        {
            if (storage.TryGetTerm(i, out var term) != LogReadStatus.Ok || expected.TryGetTerm(i, out var expectedTerm) != LogReadStatus.Ok || term != expectedTerm)
            {
                problem = $"entry {i} differs";
            }
        }

        if (problem is not null)
        {
            throw new SimulationViolation(FailureKind.Invariant, $"n{node.Id}: reopened storage lost durable state: {problem}");
        }
    }

    /// <summary>
    /// Keeps the data of the last few snapshots (DESIGN: "keep the last few") and of anything newer than the one just
    /// made durable: a Snapshot message created just before the host took a newer snapshot still finds its data.
    /// </summary>
    private void RetainSnapshots(SimNode node, ulong durableIndex)
    {
        node.RecentSnapshots.Enqueue(durableIndex);
        while (node.RecentSnapshots.Count > SnapshotsKept)
        {
            node.RecentSnapshots.Dequeue();
        }

        _disk.DiscardSnapshotDataBelow(node.Id, Math.Min(durableIndex, node.RecentSnapshots.Peek()));
    }

    private ReadOnlyMemory<byte> LoadSnapshotData(SimNode node, ulong index) =>
        _disk.LoadSnapshotData(node.Id, index)
        ?? throw new SimulationViolation(FailureKind.Exception, $"n{node.Id} has no snapshot data for index {index}");

    // ----------------------------------------------------------------------------------------------------------
    // Nodes: the host loop (Ready handling)
    // ----------------------------------------------------------------------------------------------------------

    /// <summary>After anything changed a node: check the invariants, then start persisting a Ready if none is in progress.</summary>
    private void Touch(SimNode node)
    {
        if (!node.IsRunning)
        {
            return;
        }

        // Trace a role change before the checks, so that a violation it causes is preceded by it in the trace.
        var raft = node.Raft!;
        var roleChanged = raft.Role != node.ObservedRole || raft.Term != node.ObservedTerm;
        if (roleChanged)
        {
            _trace.Add(_now, "role", node.Id, $"{raft.Role} t{raft.Term} leader={raft.Leader} commit={raft.CommitIndex} last={raft.LastIndex} {raft.Membership}");
        }

        _invariants.ObserveNode(node, _now, _nodeById);
        if (roleChanged && raft.Role == Role.Leader)
        {
            MaybeChurnLeader(node);
        }

        if (node.ReadyInProgress is not null || !raft.HasReady())
        {
            return;
        }

        var ready = raft.GetReady();
        _stats.Readies++;
        _invariants.ObserveReady(node, ready);
        node.ReadyInProgress = ready;
        var latency = ready.MustSync ? (long)(_random.NextDouble() * _options.MaxDiskLatencyMs * MicrosPerMs) : 0;
        if (_trace.IsFull || ready.MustPersist || ready.CommittedEntries.Count > 0)
        {
            _trace.Add(_now, "ready", node.Id, new ReadySummary(ready));
        }

        // A leader's appends leave at once, as the node's driver sends them: the followers may receive, persist and
        // acknowledge them, and the leader step those acknowledgements, while its own write is still running (or is
        // lost in a crash).
        foreach (var message in ready.MessagesBeforePersistence)
        {
            Send(node, message);
        }

        Schedule(_now + latency, new SimEvent(EventKind.ReadyDurable) { Node = node.Id, Generation = node.Generation });
    }

    /// <summary>The Ready's persistence completed: carry out the rest of it in the documented order, then Advance.</summary>
    private void OnReadyDurable(SimEvent e)
    {
        var node = NodeById(e.Node)!;
        if (node.Generation != e.Generation || !node.IsRunning || node.ReadyInProgress is null)
        {
            return;
        }

        var ready = node.ReadyInProgress;
        var raft = node.Raft!;

        // 1. Persist (the latency has elapsed: now it is durable).
        var commitBefore = node.Durable.HardState.Commit;
        node.Storage!.Save(ready.HardState, ready.Entries, ready.Snapshot);
        node.Durable.Save(ready.HardState, ready.Entries, ready.Snapshot);
        if (ready.Entries.Count > 0 || ready.Snapshot is not null || CommitsConfChange(node.Durable, commitBefore, node.Durable.HardState.Commit))
        {
            // The log's sync also makes any commit index saved alone before durable; a commit of a membership change
            // is synced at once (IRaftStorage.Save).
            node.SyncedCommit = node.Durable.HardState.Commit;
        }
        _invariants.ObserveDurable(node, _now, _nodeById);
        if (ready.Snapshot is not null)
        {
            RetainSnapshots(node, node.Storage.Snapshot.Index);
        }

        // 2. Send.
        foreach (var message in ready.Messages)
        {
            Send(node, message);
        }

        // 3. Apply the snapshot, then the committed entries.
        if (ready.Snapshot is { } snapshot)
        {
            InstallSnapshot(node, snapshot);
        }

        foreach (var entry in ready.CommittedEntries)
        {
            Apply(node, entry);
        }

        // 4. Reads.
        foreach (var readState in ready.ReadStates)
        {
            foreach (var read in node.Reads)
            {
                if (read.Context == readState.Context)
                {
                    read.Index = readState.Index;
                }
            }
        }

        foreach (var dropped in ready.DroppedReads)
        {
            var index = node.Reads.FindIndex(r => r.Context == dropped);
            if (index >= 0)
            {
                var read = node.Reads[index];
                node.Reads.RemoveAt(index);
                _trace.Add(_now, "read dropped", node.Id, $"ctx{dropped}");
                ReadFailed(read);
            }
        }

        ServeReads(node);

        raft.Advance(ready);
        node.ReadyInProgress = null;
        _invariants.ObserveAppliedMembership(node);
        UpdateLatestMembership(node);
        MaybeTakeSnapshot(node);
        Touch(node);
    }

    private static bool CommitsConfChange(MemoryStorage storage, ulong from, ulong to)
    {
        var first = Math.Max(from + 1, storage.FirstIndex);
        var last = Math.Min(to, storage.LastIndex);
        if (first > last)
        {
            return false;
        }

        var entries = new List<Entry>();
        storage.TryGetEntries(first, last + 1, ulong.MaxValue, entries);
        return entries.Exists(e => e.Type == EntryType.ConfChange);
    }

    private void Send(SimNode node, Message message)
    {
        _stats.MessagesSent++;
        _invariants.ObserveSend(node, message);

        // Snapshot data never passes through the core: the host attaches its latest snapshot's data at send time.
        ReadOnlyMemory<byte>? data = null;
        if (message.Type == MessageType.Snapshot)
        {
            if (message.Snapshot is not { } meta)
            {
                throw new SimulationViolation(FailureKind.Exception, $"n{node.Id} sends a Snapshot message without metadata: {message}");
            }

            data = _disk.LoadSnapshotData(node.Id, meta.Index);
            if (data is null)
            {
                // The message was created before this host took a newer snapshot and discarded this one's data: a real
                // host fails the transfer, and the core retries with its current snapshot.
                _trace.Add(_now, "snapshot data gone", node.Id, $"{meta.Index}/{meta.Term} for n{message.To}: transfer failed");
                _stats.SnapshotTransfersWithoutData++;
                Schedule(_now + MicrosPerMs, new SimEvent(EventKind.SnapshotReport)
                {
                    Node = node.Id,
                    Generation = node.Generation,
                    Peer = message.To,
                    Succeeded = false,
                });
                return;
            }
        }

        // A real transport serializes: give the receiver its own list so no state is shared between nodes.
        var sent = message.Entries.Count > 0 ? message with { Entries = message.Entries.ToArray() } : message;
        Span<long> delays = stackalloc long[2];
        var copies = _network.Plan(message.From, message.To, delays);
        if (_trace.IsFull || !IsRoutine(message))
        {
            _trace.Add(_now, copies == 0 ? "send (lost)" : copies == 2 ? "send (dup)" : "send", node.Id, sent);
        }

        for (var i = 0; i < copies; i++)
        {
            Schedule(_now + delays[i], new SimEvent(EventKind.Deliver)
            {
                Node = message.To,
                Message = sent,
                Data = data,
                ReportSnapshot = i == 0 && data is not null,
                Generation = node.Generation,
            });
        }

        if (data is not null && copies == 0)
        {
            // The transfer failed: the leader's host learns it when its stream times out.
            Schedule(_now + 50 * MicrosPerMs, new SimEvent(EventKind.SnapshotReport)
            {
                Node = node.Id,
                Generation = node.Generation,
                Peer = message.To,
                Succeeded = false,
            });
        }
    }

    private void OnDeliver(SimEvent e)
    {
        var message = e.Message!;
        var target = NodeById(message.To);
        var delivered = target is { IsRunning: true } && !_network.IsCut(message.From, message.To);
        if (e.ReportSnapshot)
        {
            Schedule(_now + MicrosPerMs, new SimEvent(EventKind.SnapshotReport)
            {
                Node = message.From,
                Generation = e.Generation,
                Peer = message.To,
                Succeeded = delivered,
            });
        }

        if (!delivered)
        {
            if (_trace.IsFull || !IsRoutine(message))
            {
                _trace.Add(_now, "drop", message.To, message);
            }

            // The node's transport tells Raft when a stream to a peer fails (PeerTransport, RaftDriver): a lost Append
            // is reported as such here, so the leader's fall back from pipelining to probing is exercised too.
            if (message.Type == MessageType.Append)
            {
                Schedule(_now + MicrosPerMs, new SimEvent(EventKind.UnreachableReport) { Node = message.From, Generation = e.Generation, Peer = message.To });
            }

            return;
        }

        _stats.MessagesDelivered++;
        if (_trace.IsFull || !IsRoutine(message))
        {
            _trace.Add(_now, "step", message.To, message);
        }

        if (e.Data is { } data)
        {
            // The receiving host stores the data first, then steps the message.
            var index = message.Snapshot!.Index;
            _disk.SaveSnapshotData(target!.Id, index, data);
            _invariants.ObserveSnapshotData(index, data, $"snapshot message from n{message.From}");
        }

        target!.Raft!.Step(message);
        Touch(target);
    }

    private void OnSnapshotReport(SimEvent e)
    {
        var node = NodeById(e.Node);
        if (node is null || node.Generation != e.Generation || !node.IsRunning)
        {
            return;
        }

        _trace.Add(_now, "report snapshot", node.Id, $"to n{e.Peer} {(e.Succeeded ? "ok" : "failed")}");
        node.Raft!.ReportSnapshot(e.Peer, e.Succeeded);
        Touch(node);
    }

    private void OnUnreachableReport(SimEvent e)
    {
        var node = NodeById(e.Node);
        if (node is null || node.Generation != e.Generation || !node.IsRunning)
        {
            return;
        }

        if (_trace.IsFull)
        {
            _trace.Add(_now, "report unreachable", node.Id, $"n{e.Peer}");
        }

        node.Raft!.ReportUnreachable(e.Peer);
        Touch(node);
    }

    private void OnTick(SimEvent e)
    {
        var node = NodeById(e.Node)!;
        if (node.Generation != e.Generation || !node.IsRunning)
        {
            return;
        }

        node.Raft!.Tick();
        Touch(node);
        Schedule(_now + _tickMicros, new SimEvent(EventKind.Tick) { Node = node.Id, Generation = node.Generation });
    }

    private void InstallSnapshot(SimNode node, SnapshotMetadata snapshot)
    {
        var data = LoadSnapshotData(node, snapshot.Index);
        _invariants.ObserveSnapshotData(snapshot.Index, data, $"n{node.Id} install");
        node.Kv = KvStateMachine.Deserialize(data);
        node.Applied = snapshot.Index;
        node.AppliedTerm = snapshot.Term;
        node.SnapshotIndex = snapshot.Index;
        _stats.SnapshotsInstalled++;
        _trace.Add(_now, "install snapshot", node.Id, $"{snapshot.Index}/{snapshot.Term} {snapshot.Membership}");

        // Proposals whose index the snapshot jumped over: this node cannot tell whether they made it.
        while (node.Proposals.Count > 0 && node.Proposals.First().Key <= snapshot.Index)
        {
            var (index, proposal) = node.Proposals.First();
            node.Proposals.Remove(index);
            ProposalOutcomeUnknown(proposal);
        }
    }

    private void Apply(SimNode node, Entry entry)
    {
        if (entry.Index != node.Applied + 1)
        {
            throw new SimulationViolation(FailureKind.Exception, $"n{node.Id}: applying {entry} after applied index {node.Applied}");
        }

        // Ready contract: committed entries are durable by the time they are applied (a protocol check).
        var durable = node.Durable;
        if (_options.ProtocolChecks && durable.Snapshot.Index < entry.Index && (durable.TryGetTerm(entry.Index, out var term) != LogReadStatus.Ok || term != entry.Term))
        {
            throw new SimulationViolation(FailureKind.Exception, $"Ready/API contract: n{node.Id} applies {entry} which is not durable on its disk");
        }

        if (entry.Type == EntryType.Normal)
        {
            node.Kv.ApplyEntryData(entry.Data.Span);
        }
        else
        {
            _stats.ConfChangesApplied++;
            _trace.Add(_now, "apply conf change", node.Id, $"{entry.Index}/{entry.Term} {ConfChange.Decode(entry.Data.Span)}");
        }

        node.Applied = entry.Index;
        node.AppliedTerm = entry.Term;
        if (node.Proposals.Remove(entry.Index, out var proposal))
        {
            ProposalApplied(proposal, entry);
        }
    }

    private void MaybeTakeSnapshot(SimNode node)
    {
        // Not during the replay after a restart: the core's membership is as of the commit index found at start until then.
        // Nor while the core holds a snapshot it accepted from a message stepped after the Ready just completed was
        // handed out: its membership is that snapshot's, ahead of the applied index, until the next Ready installs it.
        if (node.Applied < node.SnapshotIndex + (ulong)node.SnapshotEvery || node.Storage!.Snapshot.Index >= node.Applied || node.Applied < node.MembershipFloor
            || node.Raft!.FirstLogIndex > node.Applied + 1)
        {
            return;
        }

        // Taken after Advance so that the core's membership is the one as of the applied index.
        var data = node.Kv.Serialize();
        var meta = new SnapshotMetadata(node.Applied, node.AppliedTerm, node.Raft!.Membership);
        var compactTo = node.Applied > (ulong)node.SnapshotKeep ? node.Applied - (ulong)node.SnapshotKeep : 0;
        _invariants.ObserveSnapshotData(node.Applied, data, $"n{node.Id} snapshot");
        _invariants.ObserveSnapshotMetadata(meta, $"n{node.Id} snapshot");
        _disk.SaveSnapshotData(node.Id, node.Applied, data);
        node.Storage.CreateSnapshot(meta, compactTo);
        node.Durable.CreateSnapshot(meta, compactTo);
        RetainSnapshots(node, node.Applied);
        node.SnapshotIndex = node.Applied;
        _stats.SnapshotsTaken++;
        _trace.Add(_now, "snapshot", node.Id, $"{meta.Index}/{meta.Term} compact to {compactTo} {meta.Membership}");
    }

    private void Schedule(long time, SimEvent e) => _queue.Schedule(time, e);

    private void Mix(ulong value)
    {
        // FNV-1a over the event stream: equal runs give equal fingerprints.
        for (var i = 0; i < 8; i++)
        {
            _fingerprint ^= (value >> (i * 8)) & 0xff;
            _fingerprint *= 1099511628211UL;
        }
    }

    /// <summary>Heartbeats and their responses dominate the traffic; the failure trace leaves them out to show more history (the full trace has them).</summary>
    private static bool IsRoutine(Message message) => message.Type is MessageType.Heartbeat or MessageType.HeartbeatResponse;

    private sealed class SimEvent(EventKind kind)
    {
        public EventKind Kind { get; } = kind;
        public ulong Node { get; init; }
        public int Generation { get; init; }
        public Message? Message { get; init; }
        public ReadOnlyMemory<byte>? Data { get; init; }
        public bool ReportSnapshot { get; init; }
        public ulong Peer { get; init; }
        public bool Succeeded { get; init; }
        public int Client { get; init; }
        public long Token { get; init; }
    }

    private sealed class ReadySummary(Ready ready)
    {
        public override string ToString()
        {
            var parts = new List<string>();
            if (ready.HardState is { } hs)
            {
                parts.Add($"hs(t{hs.Term} v{hs.Vote} c{hs.Commit})");
            }

            if (ready.Snapshot is { } s)
            {
                parts.Add($"snapshot {s.Index}/{s.Term}");
            }

            if (ready.Entries.Count > 0)
            {
                parts.Add($"entries {ready.Entries[0]}..{ready.Entries[^1]}");
            }

            if (ready.CommittedEntries.Count > 0)
            {
                parts.Add($"apply {ready.CommittedEntries[0].Index}..{ready.CommittedEntries[^1].Index}");
            }

            if (ready.MessagesBeforePersistence.Count > 0)
            {
                parts.Add($"early msgs {ready.MessagesBeforePersistence.Count}");
            }

            if (ready.Messages.Count > 0)
            {
                parts.Add($"msgs {ready.Messages.Count}");
            }

            if (ready.ReadStates.Count > 0)
            {
                parts.Add("reads " + string.Join(",", ready.ReadStates.Select(r => $"ctx{r.Context}@{r.Index}")));
            }

            if (ready.DroppedReads.Count > 0)
            {
                parts.Add("dropped " + string.Join(",", ready.DroppedReads));
            }

            if (ready.SoftState is { } soft)
            {
                parts.Add($"soft({soft.Role} leader={soft.Leader})");
            }

            return string.Join(" ", parts);
        }
    }
}
