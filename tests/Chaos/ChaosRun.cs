using System.Diagnostics;
using System.Globalization;
using System.Text;
using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Admin;
using Dcache.TestSupport.Linearizability;
using Xunit.Abstractions;

namespace Dcache.Chaos;

/// <summary>
/// Runs one fault schedule: a fresh cluster (nodes behind link proxies, a gateway), concurrent clients, the faults in
/// order (an overlapping step's two side by side), a final heal and a whole-cluster restart, then every check. A
/// failing run saves what is needed to study it.
/// </summary>
internal sealed class ChaosRun
{
    /// <summary>
    /// How long the cluster may take to elect a leader, answer, agree or finish a membership change after a fault.
    /// Generous: on a 2-core machine shared with other builds, starting a node process alone has taken 20 s.
    /// </summary>
    private static readonly TimeSpan RecoveryTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// How soon after a gateway partition heals the gateway must answer a write and a read again ("a few seconds"):
    /// healing closes the black-holed connections, so it need not wait for a keepalive to notice; room is left for a
    /// loaded machine and for an attempt that was cut short by the heal.
    /// </summary>
    internal static readonly TimeSpan GatewayRecoveryBound = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long a read through the gateway may take to be served while the gateway is cut off from the leader alone
    /// and reads go round the members: a few attempts (1.5 s each) pick nodes in turn, and any follower serves it.
    /// </summary>
    private static readonly TimeSpan ReadAroundTheLeaderBound = TimeSpan.FromSeconds(12);

    /// <summary>How long a node whose disk was left a few KiB may take to fill it under the load and stop.</summary>
    private static readonly TimeSpan DiskFullStopTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How often a full disk is shrunk again to what its node uses plus the few KiB the fault leaves.</summary>
    private static readonly TimeSpan DiskTopUpInterval = TimeSpan.FromMilliseconds(200);

    /// <summary>Size of each node's own tmpfs in a schedule with a full disk, and of a full one given room again.</summary>
    private const int DiskMegabytes = 256;

    /// <summary>A key of the harness's own probes through the gateway: not one the clients use or the checks read.</summary>
    private const string ProbeKey = "chaos-probe";

    private readonly FaultSchedule _schedule;
    private readonly ChaosOptions _options;
    private readonly ITestOutputHelper _log;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<string> _timeline = [];
    private LocalCluster _cluster = null!;
    private ProxyMesh _mesh = null!;

    // The current members; a replaced member leaves, its joiner enters. Under _state: two overlapping faults may
    // read and change it at once (Members() for a copy).
    private readonly SortedSet<ulong> _members = [];

    // Guards what two overlapping faults share: the members, the busy nodes, the timeline, the fault problems.
    private readonly Lock _state = new();

    // Nodes whose process a fault holds (killed, paused, slowed, or part of a membership change): a second fault
    // overlapping it aims its own process faults elsewhere, so that neither undoes the other (a pause of a killed node,
    // a restart of a removed one). Always empty when faults run one at a time.
    private readonly HashSet<ulong> _busy = [];

    // Every node of the run, founders and joiners, fixed before the first fault: enumerated where LocalCluster.Nodes
    // would be, which a member update changes while an overlapping fault may be enumerating it.
    private List<ulong> _allNodes = [];

    // Checks that run once a step's faults have all healed: the gateway's recovery after a gateway partition is
    // judged from the moment nothing else holds either.
    private readonly List<Func<Task>> _afterHeal = [];

    // Nodes the harness holds SIGSTOPped: not asked who leads, since each would cost the question its 1 s deadline
    // (a paused node cannot answer), which would delay an overlapping fault's start past the other's end.
    private readonly HashSet<ulong> _paused = [];

    // While an overlapping step runs: what a fault expects of the cluster while it holds (a read served around a cut
    // leader) is noted then, not judged, since the other fault may take away what it relies on.
    private volatile bool _overlapping;

    // Both faults of the running step are membership changes: two operators, each making a plain change (no disturbance
    // or kill of its own), each retrying while the product refuses it for the other's.
    private volatile bool _twoOperators;

    // Members a member update has stopped and whose new address is not yet committed: operations.md's precondition for
    // moving another member (the other voters up) does not hold while one is in this set.
    private readonly HashSet<ulong> _moving = [];

    // While a step's second fault disturbs the survivors of a leader killed removing itself (Overlap.AfterLeaderKill):
    // done once that fault healed, when the survivors must elect a leader within the recovery timeout. Null otherwise.
    private Task? _survivorsDisturbed;

    // The leader killed with its own removal in flight, until the removal is seen applied: dead, and on neither side
    // of a partition among the survivors; with the joiner of its replacement, at whom the survivors' disturbance may aim
    // (Overlap.AimsAtJoiner).
    private (ulong Leaving, ulong Joiner)? _removingItself;

    // Refusals of a change because another was in progress (two operators at once), counted for the timeline.
    private int _pendingRefusals;
    private bool _started;

    // The node running with its clock ahead (a clock jump not yet healed), and when each such fault began and ended
    // (Stopwatch timestamps, as the history's): expiry times stamped then are not the clients' clock's.
    private ulong? _skewed;

    // Gateway retries under a new session after the cluster said a write's session expired, summed over gateway
    // processes (a killed gateway's count is read before the kill).
    private long _sessionExpiredRetries;

    // Nodes defined up front (so the gateway knows their addresses) to join at a MemberReplace step, with the
    // address the others reach each one by.
    private readonly Queue<(ulong Id, string Address)> _joiners = new();

    // Each node's data directory on a tmpfs of its own, in a schedule with a full disk (the node to fill is chosen
    // when the fault starts); and those left nearly full and not yet given room again.
    private readonly Dictionary<ulong, SmallDisk> _disks = [];
    private readonly HashSet<ulong> _full = [];

    // Members moved to a new address (member update): the address the cluster was told, and what each process wrote
    // at its earlier addresses (a failing schedule saves it with the node's log).
    private readonly Dictionary<ulong, string> _movedTo = [];
    private readonly Dictionary<ulong, StringBuilder> _earlierOutput = [];

    // What the faults themselves found wrong (a node that did not stop on a full disk, a gateway slow to recover).
    private readonly List<string> _faultProblems = [];

    // While the gateway was cut off, and from whom: the clients' outcomes then are summed up after the load.
    private readonly List<GatewayCutWindow> _gatewayCuts = [];
    private int _probes;

    // The bank workload's clients (empty under the registers workload), whose acknowledged transfers the harness
    // counts while the load runs.
    private List<BankClient> _bankClients = [];

    private ChaosRun(FaultSchedule schedule, ChaosOptions options, ITestOutputHelper log)
    {
        _schedule = schedule;
        _options = options;
        _log = log;
    }

    public static Task<ScheduleResult> RunAsync(FaultSchedule schedule, ChaosOptions options, ITestOutputHelper log) =>
        new ChaosRun(schedule, options, log).RunAsync();

    private async Task<ScheduleResult> RunAsync()
    {
        var settings = new Dictionary<string, string>
        {
            // Snapshots every few hundred entries, so restarted and cut-off nodes also catch up by snapshot install.
            ["SnapshotEntries"] = "400",
            ["SnapshotCatchUpEntries"] = "100",
        };
        if (_options.UnsafeReads)
        {
            settings["TestOnlyUnsafeReads"] = "true";
        }

        // LocalCluster reports to the test output on disposal; the command keeps its console for the summary.
        _cluster = new LocalCluster(_log, _schedule.Nodes, settings, clusterId: $"chaos-{Guid.NewGuid():N}");
        _mesh = new ProxyMesh(_cluster, oneAddressPerNode: _options.OneAddressPerNode);
        _members.UnionWith(_cluster.Nodes.Keys);
        var nextId = _cluster.Nodes.Keys.Max();
        // One joiner per replacement, and a second for one whose joiner is lost halfway (a fresh node takes its place).
        foreach (var step in _schedule.AllSteps.Where(s => s.Kind == FaultKind.MemberReplace))
        {
            for (var n = step.ReplaceMidChange == MidChangeKill.JoinerLearnerLost ? 2 : 1; n > 0; n--)
            {
                var id = ++nextId;
                _cluster.AddJoiningNode(id);
                _joiners.Enqueue((id, _mesh.AddJoiner(id)));
            }
        }

        _allNodes = [.. _cluster.Nodes.Keys];

        var problems = new List<string>();
        var history = new List<ChaosOp>();
        CheckResult? linearizability = null;
        BankTally? bank = null;
        string? artifacts = null;
        try
        {
            try
            {
                if (_schedule.AllSteps.Any(s => s.Kind == FaultKind.DiskFull))
                {
                    await MountDisksAsync();
                }

                history = await DriveAsync();
                if (_options.Workload == ChaosWorkload.Bank)
                {
                    bank = await CheckBankAsync(history, problems);
                }
                else
                {
                    linearizability = await CheckAsync(history, problems);
                }
            }
            catch (Exception ex) when (ex is TimeoutException or InvalidOperationException or Grpc.Core.RpcException or IOException)
            {
                problems.Add($"the cluster did not {(_started ? "recover" : "start (before any fault)")}: {ex.GetType().Name}: {ex.Message}");
            }

            lock (_state)
            {
                problems.InsertRange(0, _faultProblems);
            }

            // The bank's checks have no search that can run out of budget: they pass or fail.
            var verdict = problems.Count > 0 || (linearizability is null && bank is null) ? ScheduleVerdict.Failed
                : bank is not null || linearizability!.Outcome == CheckOutcome.Linearizable ? ScheduleVerdict.Passed
                : ScheduleVerdict.Inconclusive;
            if (verdict != ScheduleVerdict.Passed)
            {
                artifacts = await SaveArtifactsAsync(history, linearizability, problems, verdict);
            }

            return new ScheduleResult(
                _schedule,
                verdict,
                linearizability?.Outcome ?? CheckOutcome.Unknown,
                problems,
                history.Count,
                history.Count(op => op.Status == OpStatus.Ok),
                history.Count(op => op.Status == OpStatus.Unknown),
                history.Count(op => op.Status == OpStatus.Failed),
                _sessionExpiredRetries,
                history.Count(op => op.Status == OpStatus.Unknown && op.Error is { } e && e.Contains("session expired", StringComparison.Ordinal)),
                _clock.Elapsed,
                artifacts,
                bank);
        }
        finally
        {
            if (_disks.Count > 0)
            {
                // The nodes go first, so nothing holds files on the disks when they are unmounted, and the disks go
                // before the cluster deletes its directory, which they are mounted in.
                foreach (var node in _cluster.Nodes.Values)
                {
                    node.Resume();
                    node.Kill();
                }

                foreach (var disk in _disks.Values)
                {
                    disk.Dispose();
                }
            }

            await _cluster.DisposeAsync();
            await _mesh.DisposeAsync();
        }
    }

    /// <summary>Gives every node that may run in this schedule (joiners too) a data directory on a tmpfs of its own.</summary>
    private async Task MountDisksAsync()
    {
        foreach (var node in _cluster.Nodes.Values)
        {
            _disks[node.Id] = await SmallDisk.MountAsync(node.DataDirectory, DiskMegabytes);
        }
    }

    private string SlowDiskFile(ulong id) => Path.Combine(_cluster.Root, $"test-only-slow-disk-{id}");

    private void StartNode(ulong id, TimeSpan clockOffset = default) => _cluster[id].Start(
        $"--Dcache:Node:TestOnlySlowDiskFile={SlowDiskFile(id)}",
        $"--Dcache:Node:TestOnlyClockOffset={clockOffset.ToString("c", CultureInfo.InvariantCulture)}");

    private void Note(string what)
    {
        var line = string.Create(CultureInfo.InvariantCulture, $"{_clock.Elapsed.TotalMilliseconds,8:F0} ms  {what}");
        lock (_state)
        {
            _timeline.Add(line);
            _log.WriteLine(line);
        }
    }

    /// <summary>A liveness expectation of a fault while it holds: a problem when the fault runs alone, a note when it overlaps another.</summary>
    private void Judge(string what)
    {
        if (_overlapping)
        {
            Note($"overlap: not judged: {what}");
        }
        else
        {
            Problem(what);
        }
    }

    private void Problem(string what)
    {
        lock (_state)
        {
            _faultProblems.Add(what);
        }
    }

    private (ulong Leaving, ulong Joiner)? RemovingItself()
    {
        lock (_state)
        {
            return _removingItself;
        }
    }

    private List<ulong> Members()
    {
        lock (_state)
        {
            return [.. _members];
        }
    }

    private void PauseNode(ulong id)
    {
        lock (_state)
        {
            _paused.Add(id);
        }

        _cluster[id].Pause();
    }

    private void ResumeNode(ulong id)
    {
        _cluster[id].Resume();
        lock (_state)
        {
            _paused.Remove(id);
        }
    }

    /// <summary>Marks nodes whose process a fault holds; an overlapping fault leaves their processes alone.</summary>
    private void Hold(params ulong[] ids)
    {
        lock (_state)
        {
            _busy.UnionWith(ids);
        }
    }

    private void Release(params ulong[] ids)
    {
        lock (_state)
        {
            _busy.ExceptWith(ids);
        }
    }

    /// <summary>Load, faults, final heal, restart; returns every client operation plus the reads made after the restart.</summary>
    private async Task<List<ChaosOp>> DriveAsync()
    {
        foreach (var id in _members)
        {
            StartNode(id);
        }

        await _cluster.WaitForLeaderAsync(RecoveryTimeout);
        await _cluster.StartGatewayAsync(_schedule.ReadsAtLeader ? new Dictionary<string, string> { ["Cluster:ReadRouting"] = "Leader" } : null);
        _started = true;
        Note($"cluster of {_schedule.Nodes} up: {_schedule}");

        List<IChaosClient> clients;
        if (_options.Workload == ChaosWorkload.Bank)
        {
            await BankClient.OpenAccountsAsync(_cluster.GatewayPort, RecoveryTimeout);
            Note($"bank: {BankClient.Accounts.Length} accounts opened with {BankClient.InitialBalance} each (total {BankClient.Total})");
            _bankClients = [.. Enumerable.Range(0, _options.Clients).Select(i => new BankClient(i, _cluster.GatewayPort, _schedule.Seed * 31 + i))];
            clients = [.. _bankClients];
        }
        else
        {
            clients = [.. Enumerable.Range(0, _options.Clients).Select(i => new ChaosClient(i, _cluster.GatewayPort, _schedule.Seed * 31 + i))];
        }

        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3)); // a bound, whatever happens
        var running = clients.Select(c => Task.Run(() => c.RunAsync(stop.Token))).ToArray();
        try
        {
            await Task.Delay(_options.SteadyLoad);
            for (var i = 0; i < _schedule.Steps.Count; i++)
            {
                var step = _schedule.Steps[i];
                var transfersBefore = AcknowledgedTransfers();
                if (step.With is { } second)
                {
                    await OverlapAsync(step, second);
                }
                else
                {
                    var heal = await InjectAsync(step);
                    await Task.Delay(step.HoldMs);
                    await heal();
                    await AfterHealAsync();
                }

                if (IsMembershipChange(step.Kind) || (step.With is { } paired && IsMembershipChange(paired.Step.Kind)))
                {
                    await MembershipAgreesAsync();
                }

                if (_bankClients.Count > 0)
                {
                    await TransfersResumeAsync(i + 1, AcknowledgedTransfers() - transfersBefore, stop.Token);
                }

                await Task.Delay(step.RecoverMs);
            }

            await Task.Delay(_options.SteadyLoad);
        }
        finally
        {
            await HealEverythingAsync();
            await stop.CancelAsync();
            await Task.WhenAll(running);
        }

        await CountGatewayRetriesAsync();

        var history = clients.SelectMany(c => c.History).ToList();
        Note($"load stopped: {history.Count} operations");
        foreach (var window in _gatewayCuts)
        {
            Note($"operations called while the gateway was cut off from {window.What}: {ChaosChecks.Outcomes(history, window.From, window.To)}");
        }

        // Whole-cluster restart: every member SIGKILLed at once, then all started again.
        foreach (var id in _members)
        {
            _cluster[id].Kill();
        }

        foreach (var id in _members)
        {
            StartNode(id);
        }

        var leader = await _cluster.WaitForLeaderAsync(RecoveryTimeout);
        Note($"whole cluster restarted, node {leader} leads");
        await MovedMembersListedAsync();
        return history;
    }

    private static bool IsMembershipChange(FaultKind kind) => kind is FaultKind.MemberReplace or FaultKind.MemberUpdate;

    /// <summary>
    /// After a step with a membership change, every running member has the configuration the changes made: the members
    /// the harness counts as voters, each at its last address, and no learner (a half-joined node removed, the second
    /// of two operators' changes refused or applied, never a mixture).
    /// </summary>
    private async Task MembershipAgreesAsync()
    {
        var expected = Members();
        var running = expected.Where(id => _cluster[id].IsRunning).ToList();
        var last = "";
        try
        {
            var took = await Eventually.WaitAsync(async () =>
            {
                var statuses = await Task.WhenAll(running.Select(id => _cluster.StatusAsync(id)));
                var views = statuses.Select(s => string.Join(",", s.Members.OrderBy(m => m.Id).Select(m => $"{m.Id}{(m.Voter ? "" : " learner")}{(_movedTo.TryGetValue(m.Id, out var moved) && m.Address != moved ? " at its old address" : "")}"))).ToList();
                last = string.Join("; ", running.Zip(views, (id, view) => $"node {id}: [{view}]"));
                return views.All(view => view == string.Join(",", expected));
            }, RecoveryTimeout, $"every running member to list exactly [{string.Join(",", expected)}] as voters");
            Note($"membership: every running member lists exactly [{string.Join(",", expected)}] as voters ({took.TotalMilliseconds:F0} ms)");
        }
        catch (Exception ex) when (ex is TimeoutException or Grpc.Core.RpcException)
        {
            Problem($"the membership did not settle after the step: {ex.Message}; last seen: {last}");
        }
    }

    /// <summary>After the whole-cluster restart, every member lists each moved member at its new address (from its own log or snapshot).</summary>
    private async Task MovedMembersListedAsync()
    {
        foreach (var (id, address) in _movedTo.Where(moved => _members.Contains(moved.Key)))
        {
            try
            {
                await Eventually.WaitAsync(async () =>
                {
                    var statuses = await Task.WhenAll(_members.Select(m => _cluster.StatusAsync(m)));
                    return statuses.All(s => s.Members.Any(member => member.Id == id && member.Address == address));
                }, RecoveryTimeout, $"every member to list node {id} at {address} after the restart");
            }
            catch (TimeoutException ex)
            {
                Problem(ex.Message);
            }
        }
    }

    /// <summary>
    /// Runs a step whose second fault starts <see cref="Overlap.StartAfterMs"/> after the first began to be injected
    /// (and not before the first is in place; with <see cref="Overlap.AfterLeaderKill"/>, after the leader removing
    /// itself is dead): each holds for its own hold from when it was in place and heals at
    /// its end, so the second heals first when it ends first. Nothing is required of the cluster while both hold
    /// beyond what each fault checks itself; once both healed, it must answer a write again within the recovery
    /// timeout.
    /// </summary>
    private async Task OverlapAsync(FaultStep first, Overlap second)
    {
        var inPlace = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var startSecond = Task.Delay(second.StartAfterMs);
        _overlapping = true;
        _twoOperators = IsMembershipChange(first.Kind) && IsMembershipChange(second.Step.Kind);
        _pendingRefusals = 0;
        var secondLane = SecondLaneAsync();
        _survivorsDisturbed = second.AfterLeaderKill ? secondLane : null;
        try
        {
            await Task.WhenAll(LaneAsync(first, inPlace), secondLane);
        }
        finally
        {
            _overlapping = false;
            _twoOperators = false;
            _survivorsDisturbed = null;
        }

        if (IsMembershipChange(first.Kind) && IsMembershipChange(second.Step.Kind))
        {
            Note($"two operators: both changes done; {_pendingRefusals} refusals because the other change was in progress");
        }

        await AfterHealAsync();
        await AnswersAfterOverlapAsync();

        async Task SecondLaneAsync()
        {
            // A first fault that failed to start fails the step; the second does not start then.
            ulong? joiner = null;
            if (second.AfterLeaderKill)
            {
                // In place once the leader removing itself is dead (ReplaceMemberAsync); it stays recorded as such until
                // the removal is seen in effect, which waits for this lane's heal.
                await inPlace.Task;
                await Task.Delay(second.StartAfterMs);
                joiner = second.AimsAtJoiner ? RemovingItself()?.Joiner : null;
                Note($"overlap: {second.Step.Kind} starts {second.StartAfterMs} ms after the leader removing itself was killed, among the survivors{(joiner is { } j ? $", aimed at the joiner, node {j}" : "")}");
            }
            else
            {
                await startSecond;
                await inPlace.Task;
                Note($"overlap: {second.Step.Kind} starts {second.StartAfterMs} ms after {first.Kind} began");
            }

            await LaneAsync(second.Step, null, joiner);
        }
    }

    /// <summary>
    /// One fault of an overlapping step: inject, hold, heal. Says when its fault is in place (for the second fault's
    /// start). <paramref name="aimAt"/>: the node it aims at, when chosen for it (<see cref="InjectAsync"/>).
    /// </summary>
    private async Task LaneAsync(FaultStep step, TaskCompletionSource? inPlace, ulong? aimAt = null)
    {
        try
        {
            var heal = await InjectAsync(step, () => inPlace?.TrySetResult(), aimAt);
            inPlace?.TrySetResult();
            await Task.Delay(step.HoldMs);
            await heal();
        }
        catch (Exception ex)
        {
            inPlace?.TrySetException(ex);
            throw;
        }
    }

    private async Task AfterHealAsync()
    {
        List<Func<Task>> checks;
        lock (_state)
        {
            checks = [.. _afterHeal];
            _afterHeal.Clear();
        }

        foreach (var check in checks)
        {
            await check();
        }
    }

    /// <summary>
    /// After both faults of an overlapping step healed, the cluster answers a write through the gateway within the
    /// recovery timeout (however much the pair took away meanwhile: the checks of safety stay as they are).
    /// </summary>
    private async Task AnswersAfterOverlapAsync()
    {
        var clock = Stopwatch.StartNew();
        var value = $"p{++_probes}";
        try
        {
            var (reply, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, RecoveryTimeout, "SET", ProbeKey, value);
            if (reply.IsError)
            {
                Problem($"after both overlapping faults healed, SET {ProbeKey} {value} answered {reply}");
            }
            else
            {
                Note($"overlap: both faults healed; the gateway answers a write after {clock.ElapsedMilliseconds} ms");
            }
        }
        catch (TimeoutException ex)
        {
            Problem($"the cluster did not answer a write within {RecoveryTimeout.TotalSeconds:F0} s after both overlapping faults healed: {ex.Message}");
        }
    }

    /// <summary>
    /// Starts one fault; returns what ends it. <paramref name="inPlace"/> is told, by a fault that takes long to
    /// inject (a membership change), once its nodes are chosen and its disturbance holds, so that an overlapping
    /// fault may start during the rest of it. <paramref name="aimAt"/>: the node the fault aims at, chosen by the step
    /// it overlaps (the joiner of a replacement, which holds it, <see cref="Overlap.AimsAtJoiner"/>), instead of the
    /// leader or a free node.
    /// </summary>
    private async Task<Func<Task>> InjectAsync(FaultStep step, Action? inPlace = null, ulong? aimAt = null)
    {
        var ids = Members();
        var leader = await LeaderAsync();
        // Alone, every member is free and the choice is what it always was.
        var free = Free(ids);
        var target = aimAt ?? (AimsAtLeader(step) && leader is { } l && free.Contains(l) ? l : free[step.Pick % free.Count]);
        if (step.Kind == FaultKind.MemberReplace && step.ReplaceLeavesFollower && !_twoOperators && target == leader && free.Where(id => id != leader).ToList() is { Count: > 0 } followers)
        {
            target = followers[step.Pick % followers.Count];
        }

        var others = ids.Where(id => id != target).ToList();
        var freeOthers = free.Where(id => id != target).ToList() is { Count: > 0 } rest ? rest : others;
        var role = target == leader ? "leader" : "follower";
        switch (step.Kind)
        {
            case FaultKind.Kill:
                Hold(target);
                Note($"SIGKILL node {target} ({role})");
                _cluster[target].Kill();
                return Healed(() =>
                {
                    Note($"restart node {target}");
                    StartNode(target);
                    Release(target);
                });
            case FaultKind.Pause:
                Hold(target);
                Note($"SIGSTOP node {target} ({role})");
                PauseNode(target);
                return Healed(() =>
                {
                    Note($"SIGCONT node {target}");
                    ResumeNode(target);
                    Release(target);
                });
            case FaultKind.Partition:
                // Beside a leader killed removing itself, the survivors are split: the dead node is on neither side.
                var sides = ids.Where(id => id != _removingItself?.Leaving).ToList();
                var minority = Minority(step, sides);
                var majority = sides.Except(minority).ToList();
                var split = _mesh.Partition(minority, majority);
                Note($"partition: [{string.Join(",", minority)}] | [{string.Join(",", majority)}] (leader was {leader?.ToString(CultureInfo.InvariantCulture) ?? "none"}{(_removingItself is { Leaving: var dead } ? $"; node {dead}, killed removing itself, on neither side" : "")})");
                return Healed(() => HealLinks(split, "partition"));
            case FaultKind.Stall:
                var stalledSide = Minority(step, ids);
                var otherSide = ids.Except(stalledSide).ToList();
                var stalledLinks = stalledSide.SelectMany(node => ProxyMesh.LinksBetween(node, otherSide)).ToList();
                _mesh.Stall(stalledLinks);
                Note($"stall: [{string.Join(",", stalledSide)}] | [{string.Join(",", otherSide)}] (leader was {leader}): every byte held, nothing closed");
                return Healed(() =>
                {
                    Note("resume the stalled links: what they held is delivered now");
                    _mesh.Resume(stalledLinks);
                });
            case FaultKind.IsolateLeader:
                var isolated = _mesh.Partition([target], others);
                Note($"isolate node {target} ({role}) from [{string.Join(",", others)}]");
                return Healed(() => HealLinks(isolated, $"isolation of node {target}"));
            case FaultKind.Asymmetric:
                var oneWay = others.Select(other => step.CannotSend ? _mesh.Cut(target, other) : _mesh.Cut(other, target)).ToList();
                Note($"asymmetric: node {target} ({role}) {(step.CannotSend ? "cannot send" : "hears nobody")}; cut {_mesh.DescribeCuts()}");
                return Healed(() => HealLinks(oneWay, $"asymmetric cut of node {target}"));
            case FaultKind.SlowDisk:
                Hold(target);
                await File.WriteAllTextAsync(SlowDiskFile(target), step.SlowDiskMs.ToString(CultureInfo.InvariantCulture));
                Note($"slow disk on node {target} ({role}): {step.SlowDiskMs} ms per durable commit");
                return Healed(() =>
                {
                    Note($"disk of node {target} fast again");
                    File.WriteAllText(SlowDiskFile(target), "0");
                    Release(target);
                });
            case FaultKind.MemberReplace:
                // Two operators' changes run plain: a disturbance held until one change is done would hold the other's
                // quorum too, and each waits for the other (the one-at-a-time rule is what they meet).
                var twoOperators = _twoOperators;
                await ReplaceMemberAsync(target, role, freeOthers[(step.Pick / 28) % freeOthers.Count],
                    twoOperators ? BystanderFault.None : step.ReplaceBystander, twoOperators ? MidChangeKill.None : step.ReplaceMidChange, step, inPlace);
                return () => Task.CompletedTask;
            case FaultKind.GatewayKill:
                await CountGatewayRetriesAsync();
                Note("SIGKILL the gateway");
                _cluster.Gateway!.Kill();
                return Healed(() =>
                {
                    Note("restart the gateway");
                    _cluster.RestartGateway();
                });
            case FaultKind.GatewayPause:
                Note("SIGSTOP the gateway");
                _cluster.Gateway!.Pause();
                return Healed(() =>
                {
                    Note("SIGCONT the gateway");
                    _cluster.Gateway!.Resume();
                });
            case FaultKind.ClockJump:
                return Healed(await JumpClockAsync(step, free, leader, inPlace));
            case FaultKind.GatewayPartition or FaultKind.GatewayStall:
                return await CutGatewayAsync(step, ids, leader);
            case FaultKind.DiskFull:
                return await FillDiskAsync(target, role, step.DiskFullFreeBytes, inPlace);
            case FaultKind.MemberUpdate:
                await MoveMemberAsync(step, _twoOperators ? MoveDisturbance.None : step.MoveDisturbance, target, role, ids, freeOthers, inPlace);
                return () => Task.CompletedTask;
            default:
                throw new ArgumentOutOfRangeException(nameof(step));
        }
    }

    /// <summary>Whether the step's target is whichever node leads when it starts (if no other fault holds that node).</summary>
    private bool AimsAtLeader(FaultStep step) =>
        step.OnLeader || step.Kind == FaultKind.IsolateLeader || (step.Kind == FaultKind.MemberReplace && step.ReplaceLeavesLeader && !_twoOperators);

    /// <summary>A random minority of <paramref name="ids"/> (1 of 3; 1 or 2 of 5), as the seed chooses.</summary>
    private static List<ulong> Minority(FaultStep step, List<ulong> ids) =>
        ids.OrderBy(id => new Random(step.Pick + (int)id).Next()).Take(ids.Count == 5 && step.Pick % 2 == 0 ? 2 : 1).ToList();

    /// <summary>The members no fault holds the process of; all of them when every one is held.</summary>
    private List<ulong> Free(List<ulong> ids)
    {
        lock (_state)
        {
            var free = ids.Where(id => !_busy.Contains(id)).ToList();
            return free.Count > 0 ? free : ids;
        }
    }

    private static Func<Task> Healed(Action heal) => () =>
    {
        heal();
        return Task.CompletedTask;
    };

    /// <summary>
    /// Cuts the gateway off from some nodes (both directions; the nodes still reach each other), or for a
    /// <see cref="FaultKind.GatewayStall"/> stalls those links. Returns what heals the cut (or ends the stall) and then
    /// waits, with a bound, for the gateway to answer a write and a read again.
    /// </summary>
    private async Task<Func<Task>> CutGatewayAsync(FaultStep step, List<ulong> ids, ulong? leader)
    {
        if (step.GatewayCut != GatewayCut.RandomSubset && leader is null)
        {
            // Right after a heal (a restart, say) nobody may lead yet, and these cuts are aimed at the leader.
            await NoteElectionAsync(0);
            leader = await LeaderAsync();
        }

        var followers = ids.Where(id => id != leader).ToList();
        var (cut, what) = (step.GatewayCut, leader) switch
        {
            (GatewayCut.Leader, { } l) => ([l], "the leader"),
            (GatewayCut.AllButOneFollower, { }) => (ids.Where(id => id != followers[step.Pick % followers.Count]).ToList(), "all but one follower"),
            (GatewayCut.RandomSubset, _) => (step.GatewayCutSubset(ids), "a random subset"),
            _ => ([ids[step.Pick % ids.Count]], "a node (no leader known)"),
        };
        var stall = step.Kind == FaultKind.GatewayStall;
        List<(ulong From, ulong To)> links;
        if (stall)
        {
            links = ProxyMesh.GatewayLinks([.. cut]);
            _mesh.Stall(links);
        }
        else
        {
            links = _mesh.CutGateway(cut);
        }

        var from = Stopwatch.GetTimestamp();
        Note($"gateway {(stall ? "stalled" : "cut off")} from [{string.Join(",", cut)}] ({what}; leader {leader?.ToString(CultureInfo.InvariantCulture) ?? "none"}); it reaches [{string.Join(",", ids.Except(cut))}]");

        // With reads round the members and only the leader out of reach, the followers serve reads (a read index
        // from the leader travels between the nodes): a read must get through, whichever node its attempts pick.
        var readProbe = step.GatewayCut == GatewayCut.Leader && cut is [var only] && only == leader && !_schedule.ReadsAtLeader
            ? ReadAroundTheLeaderAsync()
            : Task.CompletedTask;
        return async () =>
        {
            await readProbe;
            if (stall)
            {
                Note("resume the gateway's stalled links: what they held is delivered now");
                _mesh.Resume(links);
            }
            else
            {
                HealLinks(links, "gateway partition");
            }

            _gatewayCuts.Add(new GatewayCutWindow(from, Stopwatch.GetTimestamp(), $"[{string.Join(",", cut)}] ({what})"));
            // Alone, right away; overlapped, once the other fault healed too (a node fault still holding may have
            // an election under way, which is no measure of the gateway).
            lock (_state)
            {
                _afterHeal.Add(GatewayRecoversAsync);
            }
        };
    }

    /// <summary>A read through the gateway, tried until served (not a check of its value: the key is the probes').</summary>
    private async Task ReadAroundTheLeaderAsync()
    {
        var clock = Stopwatch.StartNew();
        try
        {
            var (reply, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, ReadAroundTheLeaderBound, "GET", ProbeKey);
            Note(reply.IsError
                ? $"gateway cut off from the leader: GET answered {reply}"
                : $"gateway cut off from the leader: a read was served after {clock.ElapsedMilliseconds} ms");
            if (reply.IsError)
            {
                Judge($"with reads round the members and the gateway cut off from the leader only, a GET got {reply}");
            }
        }
        catch (TimeoutException ex)
        {
            Judge($"with reads round the members and the gateway cut off from the leader only, no read was served in {ReadAroundTheLeaderBound.TotalSeconds:F0} s: {ex.Message}");
        }
    }

    /// <summary>After a gateway partition healed: the gateway answers a write and a linearizable read of it, soon.</summary>
    private async Task GatewayRecoversAsync()
    {
        var clock = Stopwatch.StartNew();
        var value = $"p{++_probes}";
        try
        {
            // Each allowed the whole bound; whether both together kept to it is judged below.
            var (write, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, GatewayRecoveryBound, "SET", ProbeKey, value);
            var (read, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, GatewayRecoveryBound, "GET", ProbeKey);
            var took = clock.Elapsed;
            Note($"gateway answers again {took.TotalMilliseconds:F0} ms after the heal: SET {write}, GET {read}");
            if (write.IsError || read.Text != value)
            {
                Problem($"after the gateway partition healed, SET {ProbeKey} {value} answered {write} and GET answered {read}");
            }
            else if (took > GatewayRecoveryBound)
            {
                Problem(string.Create(CultureInfo.InvariantCulture, $"the gateway took {took.TotalSeconds:F1} s after the partition healed to answer a write and a read (bound {GatewayRecoveryBound.TotalSeconds:F0} s)"));
            }
        }
        catch (TimeoutException ex)
        {
            Problem($"the gateway did not recover after its partition healed: {ex.Message}");
        }
    }

    /// <summary>
    /// Leaves a few KiB on <paramref name="target"/>'s disk and waits for the node to fill it and stop; checks that it
    /// stopped as documented. Returns what gives the disk room again, restarts the node and waits for it to catch up.
    /// </summary>
    private async Task<Func<Task>> FillDiskAsync(ulong target, string role, int freeBytes, Action? inPlace)
    {
        Hold(target);
        var disk = _disks[target];
        var used = await disk.LeaveFreeAsync(freeBytes);
        _full.Add(target);
        Note($"disk full: node {target} ({role}) has {freeBytes / 1024} KiB left on its data directory ({used / 1024} KiB used)");
        // A membership change beside it starts while the disk fills, not once the node has stopped.
        inPlace?.Invoke();
        var clock = Stopwatch.StartNew();
        TimeSpan? stopLogged = null;
        while (_cluster[target].IsRunning && clock.Elapsed < DiskFullStopTimeout)
        {
            // When it says it stops, to tell the time the disk took to fill from the time the process took to exit.
            stopLogged ??= ChaosChecks.StopLine(_cluster[target].RecentOutput(20)).Contains("The node stops", StringComparison.Ordinal) ? clock.Elapsed : null;

            // What the node frees (a snapshot replaces older ones, SQLite checkpoints its WAL) is taken up again, as
            // another writer on the same disk would: its next writes find the disk full within a second or so, not
            // after the ten or more seconds its own growth takes to pass the peaks of its usage.
            await Task.Delay(DiskTopUpInterval);
            if (_cluster[target].IsRunning)
            {
                await disk.LeaveFreeAsync(freeBytes);
            }
        }

        if (_cluster[target].IsRunning)
        {
            // Beside a membership change the load may not reach the node for a while (no quorum while a bystander and
            // a change's node are down): then a node that has not filled its disk yet has broken no promise.
            Judge($"node {target} still ran {DiskFullStopTimeout.TotalSeconds:F0} s after its disk was left {freeBytes / 1024} KiB: not the fail-stop of operations.md (exit code 3)");
        }
        else
        {
            var output = _cluster[target].RecentOutput(200);
            var said = stopLogged is { } t ? $"said it stops after {t.TotalMilliseconds:F0} ms, " : "";
            // The node's bound on a shutdown after its loop failed (NodeRuntime) says so when it cuts one short.
            var bound = output.Split('\n').FirstOrDefault(line => line.Contains("it exits now", StringComparison.Ordinal));
            var bounded = bound is null ? "" : $" (its shutdown hung: cut short by the node's 5 s bound: \"{bound.Trim()}\")";
            Note($"disk full: node {target} {said}exited {clock.ElapsedMilliseconds} ms after the fault began{bounded}, code {_cluster[target].ExitCode}: {ChaosChecks.StopLine(output)}");
            foreach (var problem in ChaosChecks.DiskFullStop(target, _cluster[target].ExitCode, output))
            {
                Problem(problem);
            }
        }

        return async () =>
        {
            Note($"room again on node {target}'s disk; restart it");
            await disk.GrowAsync(DiskMegabytes);
            _full.Remove(target);
            if (!_cluster[target].IsRunning)
            {
                StartNode(target);
            }

            await CatchesUpAsync(target, "after its disk had room again");
            Release(target);
        };
    }

    /// <summary>A restarted node catches up: it applies what the others had committed when it came back.</summary>
    private async Task CatchesUpAsync(ulong id, string when)
    {
        var others = Members().Where(m => m != id && _cluster[m].IsRunning).ToList();
        var committed = 0UL;
        foreach (var other in others)
        {
            try
            {
                committed = Math.Max(committed, (await _cluster.StatusAsync(other)).CommitIndex);
            }
            catch (Grpc.Core.RpcException)
            {
                // One node not answering does not stop the others saying how far the cluster got.
            }
        }

        try
        {
            var took = await Eventually.WaitAsync(async () => (await _cluster.StatusAsync(id)).AppliedIndex >= committed, RecoveryTimeout, $"node {id} to apply index {committed}");
            Note($"node {id} caught up to index {committed} in {took.TotalMilliseconds:F0} ms ({when})");
        }
        catch (TimeoutException ex)
        {
            Problem($"node {id} did not catch up {when}: {ex.Message}");
        }
    }

    /// <summary>
    /// Restarts a node with its clock ahead; when it is the leader, hands leadership back to it so that it stamps the
    /// writes. Returns what restarts it with its clock right.
    /// </summary>
    private async Task<Action> JumpClockAsync(FaultStep step, List<ulong> free, ulong? leader, Action? inPlace)
    {
        if (step.ClockJumpOnLeader && leader is null)
        {
            // Right after a heal (a restart, say) nobody may lead yet: the leader's jump needs a leader.
            await NoteElectionAsync(0);
            leader = await LeaderAsync();
        }

        // Beside a membership change, the leader may be a node of the change (its leaving member, say): the jump then
        // takes a free follower. Alone every node is free and the choice is what it always was.
        var followers = free.Where(id => id != leader).ToList() is { Count: > 0 } rest ? rest : free;
        var target = step.ClockJumpOnLeader && leader is { } l && free.Contains(l) ? l : followers[step.Pick % followers.Count];
        var role = target == leader ? "leader" : "follower";
        Hold(target);
        Note($"clock jump: SIGKILL node {target} ({role}), restart it with its clock {step.ClockJumpOffset.TotalMinutes:F0} min ahead");
        _skewed = target;
        _cluster[target].Kill();
        StartNode(target, step.ClockJumpOffset);
        inPlace?.Invoke();
        if (target == leader)
        {
            await HandLeadershipToAsync(target);
            return () =>
            {
                Note($"clock jump healed: SIGKILL node {target}, restart it with its clock right");
                RestoreClock(target);
                Release(target);
            };
        }

        // A follower's clock matters once it leads: kill the leader, so that it may win the election, taking over the
        // dead leader's uncommitted writes and their retries (a retry stamped by its clock finds its session expired).
        await WaitUntilFollowingAsync(target);
        var leading = await LeaderAsync();
        if (leading is not { } current || current == target || !Free(Members()).Contains(current))
        {
            Note($"clock jump: {(leading is null ? "no leader known" : leading == target ? $"node {target} leads already" : $"node {leading} leads, held by the other fault")}, nobody killed");
            return () =>
            {
                Note($"clock jump healed: SIGKILL node {target}, restart it with its clock right");
                RestoreClock(target);
                Release(target);
            };
        }

        Hold(current);
        Note($"clock jump: SIGKILL node {current} (leader), so that node {target} may win");
        _cluster[current].Kill();
        await NoteElectionAsync(target);
        return () =>
        {
            Note($"clock jump healed: SIGKILL node {target}, restart it with its clock right; restart node {current}");
            RestoreClock(target);
            StartNode(current);
            Release(target, current);
        };
    }

    /// <summary>Waits until someone leads and notes who (after the leader was killed, whether <paramref name="skewed"/> won). Not a check.</summary>
    private async Task NoteElectionAsync(ulong skewed)
    {
        ulong? winner = null;
        try
        {
            await Eventually.WaitAsync(async () => (winner = await LeaderAsync()) is not null, ClockJumpTakeOverTimeout, "a new leader");
            Note(winner == skewed ? $"clock jump: node {skewed}, its clock ahead, won the election"
                : skewed == 0 ? $"clock jump: node {winner} leads" : $"clock jump: node {winner} won the election");
        }
        catch (TimeoutException ex)
        {
            Note($"clock jump: {ex.Message}; going on");
        }
    }

    /// <summary>Waits until the restarted node follows a leader (so killing that leader leaves a quorum); not a check.</summary>
    private async Task WaitUntilFollowingAsync(ulong id)
    {
        try
        {
            await Eventually.WaitAsync(async () =>
                (await _cluster.Client(id).StatusAsync(new Protocol.Cache.StatusRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(1))) is { LeaderId: not 0 },
                ClockJumpTakeOverTimeout, $"node {id} to follow a leader");
        }
        catch (TimeoutException ex)
        {
            Note($"clock jump: {ex.Message}; going on");
        }
    }

    private void RestoreClock(ulong id)
    {
        _cluster[id].Kill();
        _skewed = null;
        StartNode(id);
    }

    /// <summary>
    /// Asks the leader to hand over to <paramref name="target"/> until it leads. Not a check: if it does not take over in
    /// time (an election elsewhere, a slow start), the schedule goes on with the note and whoever leads.
    /// </summary>
    private async Task HandLeadershipToAsync(ulong target)
    {
        var refusal = "none";
        try
        {
            var took = await Eventually.WaitAsync(async () =>
            {
                if (await LeaderAsync() is not { } leader)
                {
                    return false;
                }

                if (leader == target)
                {
                    return true;
                }

                try
                {
                    using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(_cluster[leader].GrpcUrl);
                    await new Admin.AdminClient(channel).LeaderTransferAsync(new LeaderTransferRequest { TargetId = target }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5));
                }
                catch (Grpc.Core.RpcException ex)
                {
                    // Still starting or catching up, or an election meanwhile: ask again.
                    refusal = $"{ex.Status.StatusCode} {ex.Status.Detail}";
                }

                return await LeaderAsync() == target;
            }, ClockJumpTakeOverTimeout, $"node {target} to lead");
            Note($"clock jump: node {target} leads again ({took.TotalMilliseconds:F0} ms after its restart)");
        }
        catch (TimeoutException)
        {
            Note($"clock jump: node {target} did not take over within {ClockJumpTakeOverTimeout.TotalSeconds:F0} s (last refusal: {refusal}); going on");
        }
    }

    /// <summary>How long a clock jump waits for the restarted leader to lead again: a node start alone can take seconds.</summary>
    private static readonly TimeSpan ClockJumpTakeOverTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Adds the gateway's count of session_expired retries so far (its counters die with its process).</summary>
    private async Task CountGatewayRetriesAsync()
    {
        if (_cluster.Gateway is not { IsRunning: true })
        {
            return;
        }

        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var text = await http.GetStringAsync(new Uri($"http://127.0.0.1:{_cluster.GatewayHttpPort}/metrics"));
            _sessionExpiredRetries += SessionExpiredRetries(text);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            Note($"gateway metrics not read: {ex.Message}");
        }
    }

    /// <summary>The value of dcache_gateway_retries_total{reason="session_expired"} in a Prometheus text exposition.</summary>
    internal static long SessionExpiredRetries(string metrics)
    {
        foreach (var line in metrics.Split('\n'))
        {
            if (line.StartsWith("dcache_gateway_retries", StringComparison.Ordinal) && line.Contains("reason=\"session_expired\"", StringComparison.Ordinal))
            {
                var value = line[(line.LastIndexOf('}') + 1)..].Trim().Split(' ')[0];
                return (long)double.Parse(value, CultureInfo.InvariantCulture);
            }
        }

        return 0;
    }

    /// <summary>
    /// Adds the next joiner as a learner, promotes it, removes <paramref name="leaving"/> and kills it, while
    /// <paramref name="bystander"/> suffers <paramref name="disturbance"/> from before the first change until after the last.
    /// </summary>
    private async Task ReplaceMemberAsync(ulong leaving, string role, ulong bystander, BystanderFault disturbance, MidChangeKill midChange, FaultStep step, Action? inPlace)
    {
        var (joiner, address) = NextJoiner();
        // The bystander only when it is disturbed: otherwise an overlapping fault may take it.
        ulong[] held = disturbance == BystanderFault.None ? [leaving, joiner] : [leaving, joiner, bystander];
        Hold(held);
        var meanwhile = (disturbance, midChange) switch
        {
            (BystanderFault.None, MidChangeKill.JoinerPromoted) => $", node {joiner} killed after its promotion",
            (BystanderFault.None, MidChangeKill.LeavingBeforeRemoval) => $", node {leaving} killed before its removal",
            (BystanderFault.None, MidChangeKill.JoinerLearnerRestarted) => $", node {joiner} killed while a learner, then restarted",
            (BystanderFault.None, MidChangeKill.JoinerLearnerLost) => $", node {joiner} killed while a learner and lost",
            (BystanderFault.None, MidChangeKill.LeavingDuringRemoval) => $", node {leaving} killed while its removal is in flight",
            (BystanderFault.None, MidChangeKill.LeaderRemovingItself) => $", node {leaving} asked to remove itself as the leader and killed with its removal in flight",
            (BystanderFault.None, _) => "",
            _ => $", node {bystander} {disturbance.ToString().ToLowerInvariant()} meanwhile",
        };
        Note($"membership: node {joiner} joins to replace node {leaving} ({role}){meanwhile}");
        List<(ulong From, ulong To)> cuts = [];
        switch (disturbance)
        {
            case BystanderFault.Paused:
                PauseNode(bystander);
                break;
            case BystanderFault.Killed:
                _cluster[bystander].Kill();
                break;
            case BystanderFault.Isolated:
                cuts = _mesh.Isolate(bystander, [.. Members(), joiner]);
                break;
        }

        // With its overlapping fault aimed at the survivors of the leader removing itself, the step is in place (the
        // second fault may start) once that leader is dead; otherwise as soon as the disturbance holds.
        var inPlaceAtLeaderKill = midChange == MidChangeKill.LeaderRemovingItself && step.With is { AfterLeaderKill: true };
        try
        {
            if (!inPlaceAtLeaderKill)
            {
                inPlace?.Invoke();
            }

            await ChangeMembersAsync(joiner, address, leaving, midChange, step, inPlaceAtLeaderKill ? inPlace : null);
        }
        finally
        {
            switch (disturbance)
            {
                case BystanderFault.Paused:
                    ResumeNode(bystander);
                    break;
                case BystanderFault.Killed:
                    StartNode(bystander);
                    break;
                case BystanderFault.Isolated:
                    HealLinks(cuts, $"isolation of node {bystander}");
                    break;
            }

            Release(held);
        }

        Note($"membership: node {leaving} removed and killed; members [{string.Join(",", Members())}]{(disturbance == BystanderFault.None ? "" : $"; node {bystander} back")}");
    }

    private (ulong Id, string Address) NextJoiner()
    {
        lock (_state)
        {
            return _joiners.Dequeue();
        }
    }

    private async Task ChangeMembersAsync(ulong joiner, string address, ulong leaving, MidChangeKill midChange, FaultStep step, Action? leaderKilled)
    {
        StartNode(joiner);
        await AddLearnerAsync(joiner, address);
        switch (midChange)
        {
            case MidChangeKill.JoinerLearnerRestarted:
                // A learner that crashed comes back from its own data, still a learner; the promotion is retried
                // ("not caught up" or "received none of the leader's log yet" meanwhile), as operations.md says.
                Note($"membership: SIGKILL node {joiner} (a learner, not yet promoted)");
                _cluster[joiner].Kill();
                await Task.Delay(step.HoldMs);
                Note($"membership: restart node {joiner}");
                StartNode(joiner);
                break;
            case MidChangeKill.JoinerLearnerLost:
                // Its machine is gone: the operator removes the half-joined learner and adds a fresh node (a new id,
                // an empty data directory) in its place, as operations.md says.
                Note($"membership: SIGKILL node {joiner} (a learner, not yet promoted); it is lost");
                _cluster[joiner].Kill();
                await Task.Delay(step.HoldMs);
                await ChangeMembershipAsync(RemoveMember(joiner), list => list.Members.All(m => m.Id != joiner), $"the half-joined node {joiner} to be removed");
                var lost = joiner;
                (joiner, address) = NextJoiner();
                Note($"membership: half-joined node {lost} removed; node {joiner} joins in its place");
                StartNode(joiner);
                await AddLearnerAsync(joiner, address);
                break;
        }

        await ChangeMembershipAsync(admin => admin.MemberPromoteAsync(new MemberPromoteRequest { Id = joiner }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5)).ResponseAsync,
            list => list.Members.Any(m => m.Id == joiner && m.Voter), $"node {joiner} to be promoted");
        lock (_state)
        {
            _members.Add(joiner);
        }

        SelfRemovalSurvey? survey = null;
        switch (midChange)
        {
            case MidChangeKill.JoinerPromoted:
                // The new voter must come back knowing it is one: from its own log, not from the configuration it
                // was started with (which made it a joiner).
                Note($"membership: SIGKILL node {joiner} (just promoted)");
                _cluster[joiner].Kill();
                await Task.Delay(step.HoldMs); // the fault's hold, as for any killed node
                Note($"membership: restart node {joiner}");
                StartNode(joiner);
                break;
            case MidChangeKill.LeavingBeforeRemoval:
                Note($"membership: SIGKILL node {leaving} (about to be removed)");
                _cluster[leaving].Kill();
                break;
            case MidChangeKill.LeavingDuringRemoval:
                await KillDuringRemovalAsync(leaving, step);
                break;
            case MidChangeKill.LeaderRemovingItself:
                survey = await KillLeaderRemovingItselfAsync(leaving, joiner, step, leaderKilled);
                break;
        }

        await ChangeMembershipAsync(RemoveMember(leaving), list => list.Members.All(m => m.Id != leaving), $"node {leaving} to be removed");
        if (survey is not null)
        {
            await JudgeSelfRemovalAsync(survey);
        }

        lock (_state)
        {
            _members.Remove(leaving);
            _removingItself = null;
        }

        _cluster[leaving].Kill();
    }

    private Task AddLearnerAsync(ulong joiner, string address) =>
        ChangeMembershipAsync(admin => admin.MemberAddAsync(new MemberAddRequest { Id = joiner, Address = address }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5)).ResponseAsync,
            list => list.Members.Any(m => m.Id == joiner), $"node {joiner} to be added as a learner");

    private Func<Admin.AdminClient, Task<MembershipReply>> RemoveMember(ulong id) =>
        admin => admin.MemberRemoveAsync(new MemberRemoveRequest { Id = id }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5)).ResponseAsync;

    /// <summary>
    /// Asks the leader to remove <paramref name="leaving"/> and SIGKILLs that node 0-49 ms later, while the change is in
    /// flight (when it leads, before the change can commit or be handed over); the operator then retries the removal
    /// until the member list no longer shows it, whatever became of the first request.
    /// </summary>
    private async Task KillDuringRemovalAsync(ulong leaving, FaultStep step, Action? killed = null)
    {
        if (await LeaderAsync() is not { } leader)
        {
            Note($"membership: no node leads; SIGKILL node {leaving} before its removal instead");
            _cluster[leaving].Kill();
            killed?.Invoke();
            return;
        }

        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(_cluster[leader].GrpcUrl);
        var removal = RemoveMember(leaving)(new Admin.AdminClient(channel));
        var delayMs = step.Pick % 50;
        await Task.Delay(delayMs);
        Note($"membership: SIGKILL node {leaving} ({(leader == leaving ? "the leader, " : "")}its removal asked of node {leader} {delayMs} ms ago)");
        _cluster[leaving].Kill();
        killed?.Invoke();
        try
        {
            var reply = await removal;
            Note($"membership: the removal in flight was applied at index {reply.Index}");
        }
        catch (Grpc.Core.RpcException ex)
        {
            Note($"membership: the removal in flight ended {ex.StatusCode}: {ex.Status.Detail}; the operator retries it");
        }
    }

    /// <summary>
    /// The leader asked to remove itself and killed with the removal in flight. The joiner's add and promotion may have
    /// moved leadership (an election meanwhile); then it is handed back to <paramref name="leaving"/> first, as an
    /// operator removing the leader would find it leading. Once it is dead, the others must elect a leader within the
    /// recovery timeout, and that leader's membership tells whether the removal took (it is retried if not). With a
    /// second fault aimed at the survivors (<see cref="Overlap.AfterLeaderKill"/>), <paramref name="killed"/> starts it,
    /// and the recovery timeout runs from its heal (a killed survivor restarted): while it holds, the survivors may have
    /// no quorum (four voters, two down, when the removal did not commit), which breaks no promise. The step's
    /// <see cref="FaultStep.SelfRemovalCut"/> says which of the leader's links are cut as its removal is asked. Returns
    /// how far the removal had got at the kill, for <see cref="JudgeSelfRemovalAsync"/> once it is in effect.
    /// </summary>
    private async Task<SelfRemovalSurvey?> KillLeaderRemovingItselfAsync(ulong leaving, ulong joiner, FaultStep step, Action? killed)
    {
        if (await LeaderAsync() is { } leader && leader != leaving)
        {
            Note($"membership: node {leader} leads, not node {leaving}; hand leadership to node {leaving} so that it removes itself");
            try
            {
                using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(_cluster[leader].GrpcUrl);
                await new Admin.AdminClient(channel).LeaderTransferAsync(new LeaderTransferRequest { TargetId = leaving }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5));
            }
            catch (Grpc.Core.RpcException ex)
            {
                Note($"membership: leadership transfer to node {leaving} refused: {ex.StatusCode} {ex.Status.Detail}");
            }
        }

        var survivors = Members().Where(id => id != leaving).ToList();
        List<(ulong From, ulong To)> unreplicated = [];
        if (await LeaderAsync() != leaving)
        {
            Note($"membership: node {leaving} does not lead; its removal is asked of the leader instead");
        }
        else if (step.SelfRemovalCut != SelfRemovalCut.None)
        {
            // Its AppendEntries travel the connections it opens to the others: with those cut, the removal stays in its
            // own log, and dies with it, or reaches the one survivor whose link stays up.
            ulong? reached = step.SelfRemovalCut == SelfRemovalCut.AllButOne ? step.SelfRemovalReachedSurvivor(survivors) : null;
            unreplicated = survivors.Where(id => id != reached).Select(other => _mesh.Cut(leaving, other)).ToList();
            Note(reached is { } one
                ? $"membership: node {leaving}'s links to the others but node {one} cut, so that its removal can reach node {one} alone before it dies"
                : $"membership: node {leaving}'s links to the others cut, so that its removal cannot reach them before it dies");
        }

        // Its term, so that the survey tells whether the survivors had begun to elect another when asked.
        ulong? term = null;
        try
        {
            term = (await _cluster.StatusAsync(leaving)).Term;
        }
        catch (Grpc.Core.RpcException)
        {
        }

        var disturbed = _survivorsDisturbed;
        Task<SelfRemovalSurvey>? survey = null;
        await KillDuringRemovalAsync(leaving, step, () =>
        {
            lock (_state)
            {
                _removingItself = (leaving, joiner);
            }

            // Before the survivors can elect a leader (an election timeout, 500-1000 ms, after they last heard the dead one).
            survey = SurveySelfRemovalAsync(leaving, term, survivors);
            if (unreplicated.Count > 0)
            {
                HealLinks(unreplicated, $"cut of the dead node {leaving}");
            }

            killed?.Invoke();
        });
        var surveyed = survey is null ? null : await survey;
        if (surveyed is not null)
        {
            Note($"membership: at its kill, {surveyed}");
        }

        var clock = Stopwatch.StartNew();
        var healedAfter = "";
        if (disturbed is not null)
        {
            // Its failure, if any, is the step's (the lane rethrows it); here only its end matters.
            await Task.WhenAny(disturbed);
            healedAfter = $" (the survivors' disturbance healed {clock.ElapsedMilliseconds} ms after the kill)";
        }

        try
        {
            await Eventually.WaitAsync(async () => await LeaderAsync() is { } elected && survivors.Contains(elected), RecoveryTimeout, $"one of nodes {string.Join(",", survivors)} to lead after node {leaving} died{(disturbed is null ? "" : " and the survivors' disturbance healed")}");
        }
        catch (TimeoutException ex)
        {
            var what = $"with node {leaving} killed while removing itself, no other member led within {RecoveryTimeout.TotalSeconds:F0} s{(disturbed is null ? "" : " of the survivors' disturbance healing")}: {ex.Message}";
            // Nothing else holds once the survivors' own disturbance healed: a problem then, as when the kill is alone.
            if (disturbed is null)
            {
                Judge(what);
            }
            else
            {
                Problem(what);
            }

            return surveyed;
        }

        var newLeader = await LeaderAsync();
        try
        {
            using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(_cluster[newLeader!.Value].GrpcUrl);
            var list = await new Admin.AdminClient(channel).MemberListAsync(new MemberListRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(5));
            var removed = list.Members.All(m => m.Id != leaving);
            Note($"membership: node {newLeader} leads {clock.ElapsedMilliseconds} ms after node {leaving} died{healedAfter}; its membership [{string.Join(",", list.Members.Select(m => m.Id))}]: the removal in flight {(removed ? "is in effect" : "is not in effect yet, so it is asked until it is")}");
        }
        catch (Grpc.Core.RpcException ex)
        {
            // Leadership moved again meanwhile: the retried removal below reads the membership of whoever leads.
            Note($"membership: node {newLeader}'s member list failed ({ex.StatusCode} {ex.Status.Detail}); the removal is retried until the list shows it");
        }

        return surveyed;
    }

    /// <summary>
    /// Right after the leader removing itself was killed: the index it proposed its removal at (its log) and each
    /// running survivor's last log index, with the process each answered from, so that a restart since is seen.
    /// </summary>
    private async Task<SelfRemovalSurvey> SurveySelfRemovalAsync(ulong leaving, ulong? term, List<ulong> survivors)
    {
        List<ulong> asked;
        lock (_state)
        {
            asked = survivors.Where(id => !_paused.Contains(id)).ToList();
        }

        var answers = await Task.WhenAll(asked.Select(async id =>
        {
            var process = _cluster[id].ProcessId;
            try
            {
                var status = await _cluster.Client(id).StatusAsync(new Protocol.Cache.StatusRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(1));
                return (Id: id, Process: process, Status: (Protocol.Cache.NodeStatus?)status);
            }
            catch (Grpc.Core.RpcException)
            {
                return (Id: id, Process: process, Status: (Protocol.Cache.NodeStatus?)null);
            }
        }));
        var answered = answers.Where(a => a.Status is not null).ToList();
        // Read after the survivors (their election may be near): once it counts as not running, everything it
        // printed has been captured (ChildProcess.IsRunning).
        var proposed = _cluster[leaving].IsRunning ? null : SelfRemovalSurvey.ProposedRemovalIndex(_cluster[leaving].RecentOutput(2000), leaving);
        return new SelfRemovalSurvey(leaving, proposed, survivors, answered.ToDictionary(a => a.Id, a => a.Status!.LastIndex), term is null || answered.Any(a => a.Status!.Term != term))
        {
            Processes = answered.ToDictionary(a => a.Id, a => a.Process),
        };
    }

    /// <summary>
    /// Once the leader removing itself is no longer a member: the index the survivors applied its removal at, and
    /// whether that was legal given how far the removal had got at its kill (<see cref="SelfRemovalSurvey"/>).
    /// </summary>
    private async Task JudgeSelfRemovalAsync(SelfRemovalSurvey survey)
    {
        HashSet<ulong> applied = [];
        try
        {
            // The leader's member list shows the removal as soon as it applied it; its line may still be on the way.
            await Eventually.WaitAsync(() =>
            {
                applied = survey.Survivors.SelectMany(id => SelfRemovalSurvey.AppliedRemovalIndexes(_cluster[id].RecentOutput(2000), survey.Leaving)).ToHashSet();
                return Task.FromResult(applied.Count > 0);
            }, TimeSpan.FromSeconds(5), $"a survivor's log to show the removal of node {survey.Leaving} applied");
        }
        catch (TimeoutException)
        {
            Note($"membership: no survivor's recent log shows at which index the removal of node {survey.Leaving} applied; not judged");
            return;
        }

        var restarted = survey.Processes.Where(p => _cluster[p.Key].ProcessId != p.Value).Select(p => p.Key).ToList();
        var must = survey.MustTakeAtProposedIndex(restarted);
        Note($"membership: the removal of node {survey.Leaving} applied at index {string.Join(",", applied.Order())}: {(applied.Contains(survey.ProposedIndex ?? 0) ? "the dead leader's entry took" : "another entry, the dead leader's did not take")}; {(must ? "required: the dead leader's" : "either was legal")}{(restarted.Count > 0 ? $" (restarted since the kill: [{string.Join(",", restarted)}])" : "")}");
        if (survey.Judge(applied, restarted) is { } problem)
        {
            Problem(problem);
        }
    }

    /// <summary>What must happen to a member update while its disturbance holds.</summary>
    private enum MoveOutcome
    {
        /// <summary>The other voters reachable from each other are a quorum without the moving node, and reach it: the update commits.</summary>
        Completes,

        /// <summary>The moving node is cut off from the side with a quorum: the leader cannot reach it at its new address and refuses to move it.</summary>
        Refused,

        /// <summary>Without the moving node no quorum is left (it can vote only once the others dial its new address): nothing commits until the heal.</summary>
        Waits,
    }

    /// <summary>
    /// Moves <paramref name="target"/> to a new address as operations.md says: stop it, start it with the same data on
    /// new ports, have the leader update its address (member update), wait until it caught up. The disturbance of the
    /// step holds from before the stop until the update is done or, when it cannot be done meanwhile, for the fault's
    /// hold. Until the update commits the others dial the old address, so the moving node takes no part: the update
    /// needs a quorum of the other voters, and the leader must reach the node at its new address (it probes it first).
    /// </summary>
    private async Task MoveMemberAsync(FaultStep step, MoveDisturbance disturbance, ulong target, string role, List<ulong> ids, List<ulong> others, Action? inPlace)
    {
        var bystander = others[step.Pick / 31 % others.Count];
        // The bystander only when it is paused or isolated: otherwise an overlapping fault may take it.
        ulong[] held = disturbance is MoveDisturbance.BystanderPaused or MoveDisturbance.BystanderIsolated ? [target, bystander] : [target];
        Hold(held);
        try
        {
            if (_twoOperators)
            {
                await OtherMovesDoneAsync(target);
                ids = Members();
            }

            await MoveMemberAsync(step, disturbance, target, role, ids, bystander, inPlace);
        }
        finally
        {
            lock (_state)
            {
                _moving.Remove(target);
            }

            Release(held);
        }
    }

    /// <summary>
    /// operations.md moves a member only with the other voters up: a second operator waits until no other member is
    /// stopped for a move of its own (two members of three stopped at once leave no quorum to commit either update).
    /// </summary>
    private async Task OtherMovesDoneAsync(ulong target)
    {
        List<ulong> stopped;
        lock (_state)
        {
            stopped = [.. _moving];
            if (stopped.Count == 0)
            {
                _moving.Add(target);
                return;
            }
        }

        Note($"member update: node {target} waits: node {string.Join(",", stopped)} is moving (operations.md: the other voters up first)");
        await Eventually.WaitAsync(() =>
        {
            lock (_state)
            {
                if (_moving.Count > 0)
                {
                    return false;
                }

                _moving.Add(target);
                return true;
            }
        }, RecoveryTimeout * 2, $"node {string.Join(",", stopped)} to have moved before node {target} moves");
    }

    private async Task MoveMemberAsync(FaultStep step, MoveDisturbance disturbance, ulong target, string role, List<ulong> ids, ulong bystander, Action? inPlace)
    {
        List<(ulong From, ulong To)> cuts = [];
        var quorumSide = ids;
        var cutOff = false;
        var meanwhile = "";
        switch (disturbance)
        {
            case MoveDisturbance.BystanderPaused:
                PauseNode(bystander);
                quorumSide = ids.Where(id => id != bystander).ToList();
                meanwhile = $", node {bystander} paused meanwhile";
                break;
            case MoveDisturbance.BystanderIsolated:
                cuts = _mesh.Isolate(bystander, ids);
                quorumSide = ids.Where(id => id != bystander).ToList();
                meanwhile = $", node {bystander} isolated meanwhile";
                break;
            case MoveDisturbance.MinorityPartition:
                var minority = Minority(step, ids);
                quorumSide = ids.Except(minority).ToList();
                cutOff = minority.Contains(target);
                cuts = _mesh.Partition(minority, quorumSide);
                meanwhile = $", partition [{string.Join(",", minority)}] | [{string.Join(",", quorumSide)}] meanwhile";
                break;
        }

        var expected = cutOff ? MoveOutcome.Refused
            : quorumSide.Count(id => id != target) > ids.Count / 2 ? MoveOutcome.Completes
            : MoveOutcome.Waits;
        Note($"member update: node {target} ({role}) moves, stopped by {(step.MoveByKill ? "SIGKILL" : "SIGTERM")}{meanwhile}; expected: {expected.ToString().ToLowerInvariant()}");
        try
        {
            inPlace?.Invoke();
            if (step.MoveByKill)
            {
                _cluster[target].Kill();
            }
            else
            {
                await _cluster[target].StopAsync(TimeSpan.FromSeconds(10));
            }

            if (!_earlierOutput.TryGetValue(target, out var earlier))
            {
                _earlierOutput[target] = earlier = new StringBuilder();
            }

            earlier.AppendLine(_cluster[target].RecentOutput(2000)).AppendLine(CultureInfo.InvariantCulture, $"===== node {target} moves =====");
            var moved = await _cluster.MoveNodeAsync(target);
            var address = _mesh.Move(target);
            StartNode(target);
            _movedTo[target] = address;
            Note($"member update: node {target} restarted on port {moved.GrpcPort}, to be reached at {address}");
            if (expected == MoveOutcome.Completes)
            {
                await UpdateAddressAsync(target, address);
                Note($"member update: the leader moved node {target} to {address}{(meanwhile.Length > 0 ? " (disturbance still on)" : "")}");
            }
            else
            {
                await TryUpdateWhileHeldAsync(target, address, expected, step.HoldMs);
            }
        }
        finally
        {
            switch (disturbance)
            {
                case MoveDisturbance.BystanderPaused:
                    ResumeNode(bystander);
                    break;
                case MoveDisturbance.BystanderIsolated or MoveDisturbance.MinorityPartition:
                    HealLinks(cuts, "member update's disturbance");
                    break;
            }
        }

        if (expected != MoveOutcome.Completes)
        {
            await UpdateAddressAsync(target, _movedTo[target]);
            Note($"member update: after the heal the leader moved node {target} to {_movedTo[target]}");
        }

        await CatchesUpAsync(target, "after it moved");
    }

    /// <summary>
    /// Asks the leader to move <paramref name="id"/> to <paramref name="address"/> until one request succeeds (the
    /// update is idempotent, so one whose reply was lost may be asked again). The leader's member list is no proof: a
    /// node restarted since the move has the new address in its configuration and lists it there before the update
    /// commits (chaos seed 760424: the harness stopped asking, and the update never committed).
    /// </summary>
    private Task UpdateAddressAsync(ulong id, string address) =>
        ChangeMembershipAsync(UpdateTo(id, address), done: null, $"the leader to move node {id} to {address}");

    private Func<Admin.AdminClient, Task<MembershipReply>> UpdateTo(ulong id, string address) =>
        admin => admin.MemberUpdateAsync(new MemberUpdateRequest { Id = id, Address = address }, _cluster.Auth, DateTime.UtcNow.AddSeconds(5)).ResponseAsync;

    /// <summary>
    /// Asks for the update for the fault's hold (at least once) while it cannot commit: when the node is cut off from
    /// the leader's side, it must not show in the leader's member list at its new address (the leader probes an
    /// address before it proposes it); when no quorum is left without it, it may not. Not a check of the refusals' text.
    /// </summary>
    private async Task TryUpdateWhileHeldAsync(ulong id, string address, MoveOutcome expected, int holdMs)
    {
        var clock = Stopwatch.StartNew();
        var refusal = "none";
        var attempts = 0;
        do
        {
            attempts++;
            bool done;
            try
            {
                done = await TryChangeAsync(UpdateTo(id, address), done: null, r => refusal = r);
            }
            catch (Grpc.Core.RpcException ex)
            {
                refusal = $"{ex.Status.StatusCode} {ex.Status.Detail}";
                done = false;
            }

            if (done)
            {
                if (expected == MoveOutcome.Refused)
                {
                    Problem($"the leader moved node {id} to {address} while the node was cut off from it (the leader must reach a member at its new address first)");
                }

                Note($"member update: the leader moved node {id} to {address} while the disturbance holds ({clock.ElapsedMilliseconds} ms; expected: {expected.ToString().ToLowerInvariant()})");
                return;
            }

            await Task.Delay(100);
        }
        while (clock.ElapsedMilliseconds < holdMs);

        Note($"member update: not done during the {holdMs} ms hold, as expected ({attempts} attempts; last: {refusal})");
    }

    /// <summary>
    /// Asks the leader for a membership change until the leader's member list shows it done: a change whose reply
    /// was lost, or that another leader already applied, is not asked for twice once it shows.
    /// </summary>
    private async Task ChangeMembershipAsync(Func<Admin.AdminClient, Task<MembershipReply>> change, Func<MemberListReply, bool>? done, string what)
    {
        var refusal = "none";
        try
        {
            await Eventually.WaitAsync(() => TryChangeAsync(change, done, r => refusal = r), RecoveryTimeout, what);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException($"{ex.Message}; the leader's last refusal: {refusal}", ex);
        }
    }

    /// <summary>
    /// One request for <paramref name="change"/> unless the leader's member list already shows it <paramref name="done"/>;
    /// without <paramref name="done"/>, only the request's success counts.
    /// </summary>
    private async Task<bool> TryChangeAsync(Func<Admin.AdminClient, Task<MembershipReply>> change, Func<MemberListReply, bool>? done, Action<string> refused)
    {
        if (await LeaderAsync() is not { } leader)
        {
            refused("no node leads");
            return false;
        }

        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress(_cluster[leader].GrpcUrl);
        var admin = new Admin.AdminClient(channel);
        if (done is not null && done(await admin.MemberListAsync(new MemberListRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(5))))
        {
            return true;
        }

        try
        {
            await change(admin);
        }
        catch (Grpc.Core.RpcException ex)
        {
            // Not caught up yet, another change pending, leadership moving: ask again.
            refused($"{ex.Status.StatusCode} {ex.Status.Detail}");
            if (ex.Status.Detail.Contains("another membership change is in progress", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref _pendingRefusals);
            }

            return false;
        }

        return done is null || done(await admin.MemberListAsync(new MemberListRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(5)));
    }

    /// <summary>Heals the links one fault cut; a link an overlapping fault also cut stays cut until that one heals.</summary>
    private void HealLinks(List<(ulong From, ulong To)> links, string fault)
    {
        Note($"heal the links of the {fault}");
        _mesh.Heal(links);
    }

    /// <summary>Ends whatever fault may still be on (the run was interrupted): links healed, nodes running, disks fast and with room.</summary>
    private async Task HealEverythingAsync()
    {
        if (_skewed is { } skewed)
        {
            RestoreClock(skewed);
        }

        _mesh.HealAll();
        _cluster.Gateway?.Resume();
        foreach (var full in _full)
        {
            // Before the node restarts below: it would stop again at once.
            await _disks[full].GrowAsync(DiskMegabytes);
        }

        _full.Clear();
        lock (_state)
        {
            _paused.Clear();
        }

        foreach (var node in _members.Select(id => _cluster[id]))
        {
            if (File.Exists(SlowDiskFile(node.Id)))
            {
                File.WriteAllText(SlowDiskFile(node.Id), "0");
            }

            if (node.IsRunning)
            {
                node.Resume();
            }
            else
            {
                StartNode(node.Id);
            }
        }
    }

    /// <summary>The node that says it leads (highest term wins), or null when none does.</summary>
    private async Task<ulong?> LeaderAsync()
    {
        List<ulong> asked;
        lock (_state)
        {
            asked = _allNodes.Where(id => !_paused.Contains(id)).ToList();
        }

        var statuses = await Task.WhenAll(asked.Select(id => _cluster[id]).Where(n => n.IsRunning).Select(async n =>
        {
            try
            {
                return await _cluster.Client(n.Id).StatusAsync(new Protocol.Cache.StatusRequest(), _cluster.Auth, DateTime.UtcNow.AddSeconds(1));
            }
            catch (Grpc.Core.RpcException)
            {
                return null;
            }
        }));
        return statuses.Where(s => s is { Role: "Leader" }).OrderByDescending(s => s!.Term).FirstOrDefault()?.NodeId;
    }

    private long AcknowledgedTransfers() => _bankClients.Sum(c => c.AcknowledgedTransfers);

    /// <summary>
    /// The bank's expectation of progress, the suite's own after a heal (the cluster answers again within the recovery
    /// timeout): once a step's faults have healed, a transfer is acknowledged (one called before the heal counts if it
    /// returns after it). Notes how many were acknowledged while the faults held, which nothing requires.
    /// </summary>
    private async Task TransfersResumeAsync(int step, long whileHeld, CancellationToken loadStopped)
    {
        var healed = Stopwatch.GetTimestamp();
        try
        {
            var took = await Eventually.WaitAsync(
                () => loadStopped.IsCancellationRequested || _bankClients.Any(c => c.LastAcknowledgedAt > healed), RecoveryTimeout, $"a transfer acknowledged after step {step} healed");
            Note(loadStopped.IsCancellationRequested
                ? $"bank: step {step}: {whileHeld} transfers acknowledged while it held; the load's time bound ended before the next"
                : $"bank: step {step}: {whileHeld} transfers acknowledged while it held; the first after the heal {took.TotalMilliseconds:F0} ms later");
        }
        catch (TimeoutException ex)
        {
            Problem($"bank: no transfer acknowledged within {RecoveryTimeout.TotalSeconds:F0} s after step {step} healed ({whileHeld} while it held): {ex.Message}");
        }
    }

    /// <summary>
    /// The bank workload's checks: every read of every account and every transfer (<see cref="BankChecks.History"/>),
    /// a read of every account after the whole-cluster restart that must hold the total, the replicas' digests, and
    /// the errors clients got.
    /// </summary>
    private async Task<BankTally> CheckBankAsync(List<ChaosOp> history, List<string> problems)
    {
        var (reply, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, RecoveryTimeout, ["MGET", .. BankClient.Accounts]);
        if (reply.IsError || reply.Items is not { } items || items.Count != BankClient.Accounts.Length)
        {
            problems.Add($"MGET of the accounts after the restart answered {reply}");
        }
        else
        {
            var balances = items.Select(i => i.IsNull ? null : i.Text).ToList();
            Note($"bank: after the restart the accounts hold {string.Join(" ", balances.Select(b => b ?? "nil"))}");
            if (BankChecks.Snapshot(BankClient.Accounts, balances, BankClient.Total) is { } wrong)
            {
                problems.Add($"after the restart: {wrong}");
            }
        }

        problems.AddRange(BankChecks.History(history, BankClient.Total));
        problems.AddRange(ChaosChecks.UndocumentedErrors([.. history.Where(op => !BankChecks.IsFormatGateRefusal(op.Error))]));
        await SameDigestAsync(problems);
        var tally = BankTally.Of(history);
        Note(tally.ToString());
        if (tally.Acknowledged == 0)
        {
            problems.Add("bank: no transfer was acknowledged in the whole schedule");
        }

        return tally;
    }

    private async Task SameDigestAsync(List<string> problems)
    {
        try
        {
            var digest = await Verify.SameDigestAsync(_cluster, RecoveryTimeout);
            Note($"every replica has digest {digest}");
        }
        catch (InvalidOperationException ex)
        {
            problems.Add(ex.Message);
        }
    }

    private async Task<CheckResult> CheckAsync(List<ChaosOp> history, List<string> problems)
    {
        // Read back every register and counter through the gateway; the reads join the history, so the
        // linearizability check also proves that no acknowledged write was lost in the restart.
        var counters = new Dictionary<string, long>(StringComparer.Ordinal);
        var finalReads = new List<ChaosOp>();
        foreach (var key in ChaosClient.RegisterKeys.Concat(ChaosClient.CounterKeys))
        {
            var (reply, call, returned) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, RecoveryTimeout, "GET", key);
            if (reply.IsError)
            {
                problems.Add($"GET {key} after the restart failed: {reply}");
                continue;
            }

            finalReads.Add(new ChaosOp(-1, OpKind.Get, key, null) { Call = call, Return = returned, Status = OpStatus.Ok, Output = reply.IsNull ? null : reply.Text });
            if (ChaosClient.CounterKeys.Contains(key))
            {
                counters[key] = reply.IsNull ? 0 : long.Parse(reply.Text!, CultureInfo.InvariantCulture);
            }
        }

        var writeOnce = history.Where(op => op.Kind == OpKind.SetUnique && op.Status != OpStatus.Failed).Select(op => op.Key).ToList();
        var stored = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (var batch in writeOnce.Chunk(200))
        {
            var (reply, _, _) = await ChaosClient.UntilAnsweredAsync(_cluster.GatewayPort, RecoveryTimeout, ["MGET", .. batch]);
            if (reply.IsError || reply.Items is null || reply.Items.Count != batch.Length)
            {
                problems.Add($"MGET after the restart failed: {reply}");
                break;
            }

            for (var i = 0; i < batch.Length; i++)
            {
                stored[batch[i]] = reply.Items[i].IsNull ? null : reply.Items[i].Text;
            }
        }

        problems.AddRange(ChaosChecks.Counters(history, counters));
        problems.AddRange(ChaosChecks.WriteOnceKeys(history, stored));
        problems.AddRange(ChaosChecks.Expiry(history));
        problems.AddRange(ChaosChecks.UndocumentedErrors(history));
        await SameDigestAsync(problems);
        history.AddRange(finalReads);
        var clock = Stopwatch.StartNew();
        var result = LinearizabilityChecker.Check(ChaosChecks.ForChecker(history), new CheckOptions { TimeBudgetPerKey = _options.CheckBudgetPerKey });
        Note($"linearizability: {result.Outcome} in {clock.ElapsedMilliseconds} ms");
        if (result.Outcome == CheckOutcome.NotLinearizable)
        {
            problems.Add("not linearizable: " + string.Join(", ", result.Problems.Where(k => k.Outcome == CheckOutcome.NotLinearizable).Select(k => k.ToString())));
        }

        return result;
    }

    private async Task<string> SaveArtifactsAsync(List<ChaosOp> history, CheckResult? linearizability, List<string> problems, ScheduleVerdict verdict)
    {
        var directory = Path.Combine(_options.ArtifactsRoot, string.Create(CultureInfo.InvariantCulture, $"seed-{_schedule.Seed}-{DateTime.UtcNow:yyyyMMdd-HHmmss}"));
        Directory.CreateDirectory(directory);
        var report = new StringBuilder()
            .AppendLine(CultureInfo.InvariantCulture, $"verdict: {verdict}")
            .AppendLine(CultureInfo.InvariantCulture, $"schedule: {_schedule}")
            .AppendLine(CultureInfo.InvariantCulture, $"replay: {_options.ReplayCommand(_schedule.Seed)}")
            .AppendLine().AppendLine("problems:");
        problems.ForEach(p => report.AppendLine("  " + p));
        report.AppendLine().AppendLine("timeline:");
        _timeline.ForEach(t => report.AppendLine("  " + t));
        await File.WriteAllTextAsync(Path.Combine(directory, "report.txt"), report.ToString());
        await File.WriteAllLinesAsync(Path.Combine(directory, "history.txt"), history.OrderBy(op => op.Call).Select(op => op.ToString()));
        if (linearizability is not null)
        {
            await File.WriteAllTextAsync(Path.Combine(directory, "linearizability.txt"), linearizability.Describe());
        }

        if (_cluster.Gateway is { } gateway)
        {
            await File.WriteAllTextAsync(Path.Combine(directory, "gateway.log"), gateway.RecentOutput(2000));
        }

        foreach (var node in _cluster.Nodes.Values)
        {
            node.Resume();
            node.Kill();
            var earlier = _earlierOutput.TryGetValue(node.Id, out var before) ? before.ToString() : "";
            await File.WriteAllTextAsync(Path.Combine(directory, $"node-{node.Id}.log"), earlier + node.RecentOutput(2000));
            CopyDirectory(node.DataDirectory, Path.Combine(directory, "data", $"node{node.Id}"));
        }

        _log.WriteLine($"schedule {_schedule.Seed} {verdict}: saved to {directory}");
        _log.WriteLine($"replay: {_options.ReplayCommand(_schedule.Seed)}");
        return directory;
    }

    private static void CopyDirectory(string from, string to)
    {
        if (!Directory.Exists(from))
        {
            return;
        }

        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
