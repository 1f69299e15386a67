using System.Text;

namespace Dcache.Raft.Tests.Support;

/// <summary>
/// A small, synchronous, deterministic cluster for scenario tests: messages are delivered in order until the cluster
/// is quiet, links can be cut, nodes crashed (losing everything not in their storage) and restarted.
/// The randomized, fault-injecting simulator lives in Dcache.TestSupport.Simulation; this one is for named scenarios.
/// </summary>
internal sealed class TestCluster
{
    private readonly Dictionary<ulong, TestNode> _nodes = [];
    private readonly HashSet<(ulong From, ulong To)> _cut = [];
    private readonly Queue<(Message Message, IReadOnlyList<string>? SnapshotData)> _inFlight = new();
    private readonly int _seed;

    public TestCluster(int voters, int seed = 1, Action<RaftOptions>? configure = null)
    {
        _seed = seed;
        Configure = configure;
        var membership = Membership.Of(Enumerable.Range(1, voters).Select(i => (ulong)i));
        foreach (var id in membership.Voters)
        {
            AddNode(id, MemoryStorage.Bootstrap(membership));
        }
    }

    public Action<RaftOptions>? Configure { get; }

    public TestNode this[ulong id] => _nodes[id];

    public IEnumerable<TestNode> Nodes => _nodes.Values;

    /// <summary>Log of delivered messages, for asserting what happened.</summary>
    public List<Message> Delivered { get; } = [];

    public TestNode AddNode(ulong id, MemoryStorage? storage = null)
    {
        var node = new TestNode(id, storage ?? new MemoryStorage(), this, _seed);
        _nodes[id] = node;
        node.Start();
        return node;
    }

    public void Isolate(ulong id)
    {
        foreach (var other in _nodes.Keys.Where(o => o != id))
        {
            _cut.Add((id, other));
            _cut.Add((other, id));
        }
    }

    public void Cut(ulong from, ulong to) => _cut.Add((from, to));

    public void Heal() => _cut.Clear();

    /// <summary>Messages this says true of are lost in transit (finer than <see cref="Cut"/>: by type, say).</summary>
    public Func<Message, bool>? Drop { get; set; }

    /// <summary>Processes every Ready and delivers every message (dropping those on cut links) until nothing moves.</summary>
    public void Stabilize(int maxRounds = 100_000)
    {
        for (var round = 0; round < maxRounds; round++)
        {
            var progressed = false;
            foreach (var node in _nodes.Values.ToList())
            {
                progressed |= node.ProcessReady();
            }

            progressed |= DeliverPending();
            if (!progressed)
            {
                return;
            }
        }

        throw new InvalidOperationException("cluster did not stabilize");
    }

    /// <summary>
    /// Delivers every message in flight without processing any Ready (what the steps send waits for the next Ready): as a
    /// host's loop that steps every input it has drained before it handles the next Ready. True if any was in flight.
    /// </summary>
    public bool DeliverPending()
    {
        var progressed = false;
        while (_inFlight.Count > 0)
        {
            progressed = true;
            var (message, data) = _inFlight.Dequeue();
            if (_cut.Contains((message.From, message.To)) || Drop?.Invoke(message) == true || !_nodes.TryGetValue(message.To, out var target) || target.Raft is null)
            {
                if (message.Type == MessageType.Snapshot && _nodes[message.From].Raft is { } sender)
                {
                    sender.ReportSnapshot(message.To, succeeded: false);
                }

                continue;
            }

            Delivered.Add(message);
            if (data is not null)
            {
                target.IncomingSnapshot = data;
            }

            target.Raft.Step(message);
            if (message.Type == MessageType.Snapshot && _nodes[message.From].Raft is { } snapshotSender)
            {
                snapshotSender.ReportSnapshot(message.To, succeeded: true);
            }
        }

        return progressed;
    }

    public void Tick(int ticks = 1, params ulong[] only)
    {
        for (var i = 0; i < ticks; i++)
        {
            foreach (var node in _nodes.Values)
            {
                if (node.Raft is not null && (only.Length == 0 || only.Contains(node.Id)))
                {
                    node.Raft.Tick();
                }
            }

            Stabilize();
        }
    }

    /// <summary>Ticks until <paramref name="condition"/> holds; returns the ticks it took, failing past <paramref name="maxTicks"/>.</summary>
    public int TickUntil(Func<bool> condition, int maxTicks = 1000)
    {
        for (var ticks = 0; ticks <= maxTicks; ticks++)
        {
            if (condition())
            {
                return ticks;
            }

            Tick();
        }

        throw new TimeoutException($"condition not reached within {maxTicks} ticks");
    }

    public TestNode ElectLeader(ulong id)
    {
        _nodes[id].Raft!.Campaign();
        Stabilize();
        if (_nodes[id].Raft!.Role != Role.Leader)
        {
            throw new InvalidOperationException($"node {id} did not win the election");
        }

        return _nodes[id];
    }

    public TestNode? Leader() =>
        _nodes.Values.Where(n => n.Raft?.Role == Role.Leader).OrderByDescending(n => n.Raft!.Term).FirstOrDefault();

    internal void Enqueue(Message message, IReadOnlyList<string>? snapshotData) => _inFlight.Enqueue((message, snapshotData));
}

/// <summary>One node of a <see cref="TestCluster"/>: its storage ("disk"), its Raft core, and a state machine that is a list of applied commands.</summary>
internal sealed class TestNode(ulong id, MemoryStorage storage, TestCluster cluster, int seed)
{
    public ulong Id { get; } = id;

    public MemoryStorage Storage { get; private set; } = storage;

    public RaftNode? Raft { get; private set; }

    /// <summary>Applied application commands, in order (no-ops and membership changes excluded).</summary>
    public List<string> Applied { get; private set; } = [];

    public List<ReadState> ReadStates { get; } = [];

    public List<ulong> DroppedReads { get; } = [];

    public List<string> SnapshotData { get; private set; } = [];

    public IReadOnlyList<string>? IncomingSnapshot { get; set; }

    public void Start()
    {
        var options = new RaftOptions { Id = Id, Applied = Storage.Snapshot.Index };
        cluster.Configure?.Invoke(options);
        Applied = [.. SnapshotData];
        Raft = new RaftNode(options, Storage, new SeededRandom(seed * 1000 + (int)Id));
    }

    public void Crash() => Raft = null;

    public void Restart()
    {
        Crash();
        Start();
    }

    public ProposeResult Propose(string command) => Raft!.Propose(Encoding.UTF8.GetBytes(command));

    public void TakeSnapshot(ulong keepEntries = 0)
    {
        var raft = Raft!;
        var applied = raft.AppliedIndex;
        raft.TryGetLogTerm(applied, out var term);
        SnapshotData = [.. Applied];
        Storage.CreateSnapshot(new SnapshotMetadata(applied, term, raft.Membership), applied > keepEntries ? applied - keepEntries : 0);
    }

    public bool ProcessReady()
    {
        if (Raft is null || !Raft.HasReady())
        {
            return false;
        }

        var ready = Raft.GetReady();
        foreach (var message in ready.MessagesBeforePersistence)
        {
            cluster.Enqueue(message, null);
        }

        Storage.Save(ready.HardState, ready.Entries, ready.Snapshot);
        foreach (var message in ready.Messages)
        {
            cluster.Enqueue(message, message.Type == MessageType.Snapshot ? SnapshotData : null);
        }

        if (ready.Snapshot is not null)
        {
            SnapshotData = [.. IncomingSnapshot ?? throw new InvalidOperationException("snapshot metadata without data")];
            Applied = [.. SnapshotData];
        }

        foreach (var entry in ready.CommittedEntries)
        {
            if (entry.Type == EntryType.Normal && entry.Data.Length > 0)
            {
                Applied.Add(Encoding.UTF8.GetString(entry.Data.Span));
            }
        }

        ReadStates.AddRange(ready.ReadStates);
        DroppedReads.AddRange(ready.DroppedReads);
        Raft.Advance(ready);
        return true;
    }
}
