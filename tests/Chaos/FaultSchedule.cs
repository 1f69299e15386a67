using System.Globalization;
using System.Text;

namespace Dcache.Chaos;

/// <summary>The faults the suite injects.</summary>
internal enum FaultKind
{
    /// <summary>SIGKILL a node (the leader or another), restart it after the hold.</summary>
    Kill,

    /// <summary>SIGSTOP a node for longer than the election timeout, then SIGCONT.</summary>
    Pause,

    /// <summary>Split the nodes into a majority and a minority (random members) that cannot reach each other.</summary>
    Partition,

    /// <summary>Cut the current leader off from every other node, both directions.</summary>
    IsolateLeader,

    /// <summary>One node's traffic is cut in one direction only: it cannot send to the others, or it hears nobody.</summary>
    Asymmetric,

    /// <summary>Every durable log commit of one node sleeps (the node's disk is slow).</summary>
    SlowDisk,

    /// <summary>
    /// Membership change: a new node joins as a learner, is promoted, and a member (the leader or another) is
    /// removed and its process killed; the cluster keeps its size with one member replaced. Meanwhile another member
    /// may be paused, killed or cut off; or else the joiner may be killed right after its promotion (and restarted),
    /// or the leaving member killed before its removal.
    /// </summary>
    MemberReplace,

    /// <summary>
    /// SIGKILL the gateway, restart it after the hold. Commands in flight there end unknown (writes) or failed (reads)
    /// for their clients, which reconnect; a write the dead gateway had sent must apply at most once.
    /// </summary>
    GatewayKill,

    /// <summary>
    /// SIGSTOP the gateway, SIGCONT after the hold (up to 5 s: past its 4 s deadline). On waking, every timer of the
    /// gateway fires at once while replies wait in its sockets: attempts time out and are retried or answered
    /// unknown, and a retried write must still apply once.
    /// </summary>
    GatewayPause,

    /// <summary>
    /// SIGKILL a node and restart it with its wall clock 61-180 min ahead (NodeOptions.TestOnlyClockOffset), past the
    /// 1 h session timeout; three times in four it is the leader and leadership is handed back to it, so it stamps the
    /// writes and moves the cache's clock forward for good: every write session expires at once. Otherwise a follower,
    /// and then the leader is killed so that it may win the election. Healed by restarting it with its clock right
    /// (the cache's clock must not go back), and the killed leader if any.
    /// </summary>
    ClockJump,

    /// <summary>
    /// Cut the gateway off from some nodes, both directions, while the nodes reach each other: from the leader only,
    /// from every node but one follower, or from a random subset (possibly all). Healed, the gateway must answer a
    /// write and a read again within a few seconds (ChaosRun.GatewayRecoveryBound).
    /// </summary>
    GatewayPartition,

    /// <summary>
    /// A node's data directory (a tmpfs of its own) is left with a few KiB free, so the node's own writes under the
    /// load fill it: it must stop with exit code 3 and name the full disk (operations.md). After the hold the disk gets
    /// room again, the node is restarted and must catch up.
    /// </summary>
    DiskFull,

    /// <summary>
    /// A member moves to a new address, as operations.md says: stopped (SIGTERM or SIGKILL), started with its data on
    /// new ports (through a proxy of its own, so later cuts still reach it), and its address updated through the
    /// leader (member update); then it must catch up. Meanwhile another member may be paused or cut off, or a minority
    /// partition may hold (<see cref="MoveDisturbance"/>). Later faults aim at its new address.
    /// </summary>
    MemberUpdate,

    /// <summary>
    /// As <see cref="Partition"/> (a random minority and the rest), but the links between the two sides stall instead of
    /// dropping: every byte held, no connection closed (Link.Stall), for 11-16 s, past the HTTP/2 keepalive (5 s of
    /// silence plus a 5 s ping timeout), so only the processes' own timeouts can end their connections; when it ends,
    /// whatever was held is delivered, late. Not in the default list (<see cref="ChaosOptions.DefaultFaults"/>).
    /// </summary>
    Stall,

    /// <summary>
    /// As <see cref="GatewayPartition"/> (the gateway and the same choice of nodes), but the links stall instead of
    /// dropping: every byte held, nothing closed, for 2-16 s, below and past the gateway's deadline (4 s) and its HTTP/2
    /// keepalive (10 s). What the gateway sent meanwhile arrives late when the stall ends, after it answered its client
    /// -UNKNOWN or retried: a write must still apply at most once. Not in the default list.
    /// </summary>
    GatewayStall,
}

/// <summary>What else holds while a <see cref="FaultKind.MemberUpdate"/> moves a member.</summary>
internal enum MoveDisturbance
{
    /// <summary>Nothing.</summary>
    None,

    /// <summary>Another member is paused (SIGSTOP) until the change is done.</summary>
    BystanderPaused,

    /// <summary>Another member is cut off from every member, both directions, until the change is done.</summary>
    BystanderIsolated,

    /// <summary>A random minority (which may hold the moving node, the leader, both or neither) is cut off from the rest.</summary>
    MinorityPartition,
}

/// <summary>What happens to another member while a <see cref="FaultKind.MemberReplace"/> runs.</summary>
internal enum BystanderFault
{
    None,
    Paused,
    Killed,
    Isolated,
}

/// <summary>Which node of a <see cref="FaultKind.MemberReplace"/> is killed (SIGKILL) halfway through it, and when.</summary>
internal enum MidChangeKill
{
    None,

    /// <summary>The joiner right after its promotion, restarted after the hold: it must come back a voter from its own log.</summary>
    JoinerPromoted,

    /// <summary>The leaving member before its removal is asked for: it is removed while dead.</summary>
    LeavingBeforeRemoval,

    /// <summary>The joiner while a learner (added, not promoted), restarted after the hold; the promotion is retried.</summary>
    JoinerLearnerRestarted,

    /// <summary>The joiner while a learner, never to come back (its machine lost): the half-joined learner is removed and a fresh node joins in its place.</summary>
    JoinerLearnerLost,

    /// <summary>The leaving member, a follower, while its removal is in flight; the removal is retried until the member list shows it.</summary>
    LeavingDuringRemoval,

    /// <summary>
    /// The leaving member is the leader, asked to remove itself, and killed 0-49 ms later, before the change can commit
    /// or be handed over: the others elect a leader, whose membership says whether the removal took; it is retried until
    /// the member list shows it.
    /// </summary>
    LeaderRemovingItself,
}

/// <summary>
/// Which of a self-removing leader's links to the survivors are cut just before its removal is asked
/// (<see cref="FaultStep.SelfRemovalCut"/>), and so how far the removal's entry can travel before the leader dies.
/// </summary>
internal enum SelfRemovalCut
{
    /// <summary>None: the entry may reach every survivor (it reached them in every run of session 21).</summary>
    None,

    /// <summary>Every link but the one to a single survivor: the entry reaches that survivor alone, or nobody.</summary>
    AllButOne,

    /// <summary>Every link: the entry stays in the leader's own log and dies with it.</summary>
    All,
}

/// <summary>Whom a <see cref="FaultKind.GatewayPartition"/> cuts the gateway off from.</summary>
internal enum GatewayCut
{
    /// <summary>The leader only: writes cannot reach it; reads round the members still can be served by the followers.</summary>
    Leader,

    /// <summary>Every node but one follower, which alone can still serve reads (and redirects writes it cannot forward).</summary>
    AllButOneFollower,

    /// <summary>A random non-empty subset of the members, possibly all of them.</summary>
    RandomSubset,
}

/// <summary>One fault: what, on whom (chosen when injected, from <see cref="Pick"/>), and for how long.</summary>
/// <param name="OnLeader">Aim at whichever node leads when the fault starts (else a node chosen by <see cref="Pick"/>).</param>
/// <param name="Pick">Chooses among candidate nodes, so the same schedule makes the same choices.</param>
/// <param name="HoldMs">How long the fault lasts.</param>
/// <param name="RecoverMs">How long the cluster runs healed before the next fault.</param>
/// <param name="SlowDiskMs">For <see cref="FaultKind.SlowDisk"/>: the delay per durable commit.</param>
/// <param name="CannotSend">For <see cref="FaultKind.Asymmetric"/>: the node cannot send (true) or cannot hear (false).</param>
internal sealed record FaultStep(FaultKind Kind, bool OnLeader, int Pick, int HoldMs, int RecoverMs, int SlowDiskMs, bool CannotSend)
{
    /// <summary>
    /// With <see cref="ChaosOptions.Overlap"/>: a second fault that starts while this one holds, and heals at its own
    /// end (before this one when it ends first, after it otherwise). Null: this fault runs alone.
    /// </summary>
    public Overlap? With { get; init; }

    // The clock jump's choices come from Pick rather than from draws of their own, so that a run whose fault list
    // lacks it makes the same schedules as before it existed.

    /// <summary>For <see cref="FaultKind.ClockJump"/>: the leader's clock jumps, and it leads again (else a follower's).</summary>
    public bool ClockJumpOnLeader => OnLeader || Pick % 2 == 0;

    /// <summary>For <see cref="FaultKind.ClockJump"/>: how far ahead the node's clock runs, past the 1 h session timeout.</summary>
    public TimeSpan ClockJumpOffset => TimeSpan.FromMinutes(61 + (Pick / 13 % 120));

    /// <summary>For <see cref="FaultKind.GatewayPartition"/> and <see cref="FaultKind.GatewayStall"/>: whom the gateway is cut off from.</summary>
    public GatewayCut GatewayCut => (GatewayCut)(Pick / 17 % 3);

    /// <summary>
    /// For <see cref="GatewayCut.RandomSubset"/>: the members the gateway is cut off from, as a mask over the members
    /// in id order, chosen when the fault starts (the membership may have changed by then). Never empty.
    /// </summary>
    public IReadOnlyList<ulong> GatewayCutSubset(IReadOnlyList<ulong> members)
    {
        var mask = new Random(Pick).Next(1, 1 << members.Count);
        return members.Where((_, i) => (mask & (1 << i)) != 0).ToList();
    }

    /// <summary>
    /// For <see cref="FaultKind.DiskFull"/>: the room left on the node's data directory. Small enough that the load
    /// fills it within seconds (a few dozen durable commits and the next snapshot), so the node stops mid-schedule.
    /// </summary>
    public int DiskFullFreeBytes => (16 + (Pick / 19 % 113)) * 1024;

    /// <summary>For <see cref="FaultKind.MemberUpdate"/>: the node is stopped by SIGKILL (else SIGTERM: a leader hands over first).</summary>
    public bool MoveByKill => Pick / 23 % 2 == 0;

    /// <summary>For <see cref="FaultKind.MemberUpdate"/>: what else holds while the member moves.</summary>
    public MoveDisturbance MoveDisturbance => (MoveDisturbance)(Pick / 29 % 4);

    /// <summary>
    /// For <see cref="FaultKind.MemberReplace"/>: the leaving member is the leader removing itself, and the overlapping
    /// fault disturbs the survivors once it is dead (<see cref="Overlap.AfterLeaderKill"/>), whatever <see cref="Pick"/> says.
    /// </summary>
    private bool SelfRemovalDisturbed => Kind == FaultKind.MemberReplace && With is { AfterLeaderKill: true };

    /// <summary>
    /// For a <see cref="SelfRemovalDisturbed"/> replacement: which of the leader's links to the survivors are cut as its
    /// removal is asked (and healed once it is dead). Half of them every link (session 21): the removal cannot reach
    /// the survivors and does not take; they are four voters with the dead one among them (six of five founders), and
    /// their disturbance leaves them no quorum until it heals (without a cut the entry left the leader before the
    /// SIGKILL in every run). A quarter every link but one (session 22), to the survivor
    /// <see cref="SelfRemovalReachedSurvivor"/> picks: the entry reaches it alone, and a quarter none. Drawn from the
    /// bits of <see cref="Pick"/> that choose a bystander, which such a replacement has none of; the halves of session 21
    /// keep their seeds (its "not cut" half is split in two).
    /// </summary>
    public SelfRemovalCut SelfRemovalCut => !SelfRemovalDisturbed ? SelfRemovalCut.None : (Pick / 7 % 4) switch
    {
        0 or 2 => SelfRemovalCut.All,
        1 => SelfRemovalCut.None,
        _ => SelfRemovalCut.AllButOne,
    };

    /// <summary>
    /// For <see cref="SelfRemovalCut.AllButOne"/>: the survivor whose link from the leader stays up, among
    /// <paramref name="survivors"/> (the members but the leader, in id order; the joiner among them).
    /// </summary>
    public ulong SelfRemovalReachedSurvivor(IReadOnlyList<ulong> survivors) => survivors[SelfRemovalSurvivorPick % survivors.Count];

    // Bits of Pick above the cut's, which nothing else of such a step reads.
    private int SelfRemovalSurvivorPick => Pick / 28;

    /// <summary>For <see cref="FaultKind.MemberReplace"/>: three times in four another member is down throughout the change.</summary>
    public BystanderFault ReplaceBystander => SelfRemovalDisturbed ? BystanderFault.None : (BystanderFault)(Pick / 7 % 4);

    /// <summary>
    /// For <see cref="FaultKind.MemberReplace"/> with no bystander down (with one down as well, four voters would have two
    /// down: no quorum by design): two times in three a node of the change itself is killed halfway. The joiner and the
    /// leaving member each a third of the time, as before session 19; half of the joiner's at the newer halfway points
    /// (killed as a learner). The leaving member's: half of them the leader removing itself, killed with its removal in
    /// flight (session 20: until then a removal in flight happened to be a follower's in every run); a quarter the
    /// leaving member (as the step aims) killed before its removal is asked; a quarter a follower killed while it is in flight.
    /// </summary>
    public MidChangeKill ReplaceMidChange => SelfRemovalDisturbed ? MidChangeKill.LeaderRemovingItself : ReplaceBystander != BystanderFault.None ? MidChangeKill.None : (Pick / 112 % 3) switch
    {
        0 => MidChangeKill.None,
        1 => (Pick / 336 % 4) switch
        {
            0 or 1 => MidChangeKill.JoinerPromoted,
            2 => MidChangeKill.JoinerLearnerRestarted,
            _ => MidChangeKill.JoinerLearnerLost,
        },
        _ => (Pick / 336 % 4) switch
        {
            0 => MidChangeKill.LeavingBeforeRemoval,
            1 => MidChangeKill.LeavingDuringRemoval,
            _ => MidChangeKill.LeaderRemovingItself,
        },
    };

    /// <summary>For <see cref="FaultKind.MemberReplace"/>: the leaving member is the leader (else as <see cref="OnLeader"/> and <see cref="Pick"/> choose).</summary>
    public bool ReplaceLeavesLeader => ReplaceMidChange == MidChangeKill.LeaderRemovingItself;

    /// <summary>For <see cref="FaultKind.MemberReplace"/>: the leaving member is a follower, whatever <see cref="OnLeader"/> says.</summary>
    public bool ReplaceLeavesFollower => ReplaceMidChange == MidChangeKill.LeavingDuringRemoval;

    public override string ToString()
    {
        // A lone step reads as it did before overlaps existed: runs compare schedules by this text.
        return With is { } with
            ? string.Create(CultureInfo.InvariantCulture, $"{Describe()}, overlapped {with.StartAfterMs} ms {(with.AfterLeaderKill ? "after the leader's kill, among the survivors," : "in")} by {with.Step.Describe(with.AimsAtJoiner ? "the joiner" : null)}, then {RecoverMs} ms healed")
            : string.Create(CultureInfo.InvariantCulture, $"{Describe()}, then {RecoverMs} ms healed");
    }

    /// <summary>The fault without what follows it: kind, target, details and hold.</summary>
    /// <param name="target">Whom the fault aims at, when something other than the step itself chose it.</param>
    private string Describe(string? target = null)
    {
        target ??= Kind switch
        {
            FaultKind.Partition or FaultKind.Stall => "random minority",
            FaultKind.GatewayKill or FaultKind.GatewayPause => "gateway",
            FaultKind.ClockJump => ClockJumpOnLeader ? "leader, leads again" : $"follower pick {Pick % 1000}, leader killed",
            FaultKind.GatewayPartition or FaultKind.GatewayStall => GatewayCut switch
            {
                GatewayCut.Leader => "gateway from the leader",
                GatewayCut.AllButOneFollower => $"gateway from all but follower pick {Pick % 1000}",
                _ => $"gateway from subset pick {Pick % 1000}",
            },
            FaultKind.MemberReplace when SelfRemovalCut == SelfRemovalCut.All => "leader, killed with its own removal in flight, cut off from the others first",
            FaultKind.MemberReplace when SelfRemovalCut == SelfRemovalCut.AllButOne => $"leader, killed with its own removal in flight, cut off from all the others but survivor pick {SelfRemovalSurvivorPick % 1000} first",
            FaultKind.MemberReplace when ReplaceLeavesLeader => "leader, killed with its own removal in flight",
            _ => OnLeader || Kind == FaultKind.IsolateLeader ? "leader" : $"node pick {Pick % 1000}",
        };
        var detail = Kind switch
        {
            FaultKind.SlowDisk => $", {SlowDiskMs} ms per commit",
            FaultKind.Asymmetric => CannotSend ? ", cannot send" : ", cannot hear",
            FaultKind.ClockJump => $", clock +{ClockJumpOffset.TotalMinutes:F0} min",
            FaultKind.DiskFull => $", {DiskFullFreeBytes / 1024} KiB left",
            FaultKind.MemberUpdate => $", {(MoveByKill ? "SIGKILL" : "SIGTERM")}, {MoveDisturbance switch
            {
                MoveDisturbance.None => "alone",
                MoveDisturbance.BystanderPaused => "a bystander paused",
                MoveDisturbance.BystanderIsolated => "a bystander isolated",
                _ => "a minority partition",
            }}",
            _ => "",
        };
        return string.Create(CultureInfo.InvariantCulture, $"{Kind} ({target}{detail}) for {HoldMs} ms");
    }
}

/// <summary>A second fault overlapping a step's first: it starts <paramref name="StartAfterMs"/> after the first began to be injected.</summary>
/// <param name="Step">The second fault (its <see cref="FaultStep.RecoverMs"/> is unused: the step's own follows both heals).</param>
internal sealed record Overlap(FaultStep Step, int StartAfterMs)
{
    /// <summary>
    /// The first fault is a member replacement whose leader, asked to remove itself, is killed with the removal in
    /// flight; this second fault (a partition, a kill or a pause) starts <see cref="StartAfterMs"/> after that kill, among
    /// the survivors, while they elect a leader and the removal is decided. If the removal did not commit, the dead
    /// leader is one of four voters (six of five founders) and the disturbance may leave the survivors no quorum until
    /// it ends.
    /// </summary>
    public bool AfterLeaderKill { get; init; }

    /// <summary>
    /// With <see cref="AfterLeaderKill"/>, a third of the kills and pauses: the survivor killed or paused is the
    /// replacement's joiner, a voter since its promotion, whatever <see cref="FaultStep.OnLeader"/> and
    /// <see cref="FaultStep.Pick"/> say (the change holds the joiner otherwise, so that no other fault takes it). Until
    /// session 22 it never was. Drawn from bits of the second fault's <see cref="FaultStep.Pick"/> that a kill or a pause
    /// does not read, so the other steps' choices stay as they were.
    /// </summary>
    public bool AimsAtJoiner => AfterLeaderKill && Step.Kind is FaultKind.Kill or FaultKind.Pause && Step.Pick / 7 % 3 == 0;
}

/// <summary>A fault schedule, entirely determined by its seed and the options it was made with.</summary>
/// <param name="ReadsAtLeader">The gateway sends reads to the leader (ReadRouting=Leader) rather than round the members.</param>
internal sealed record FaultSchedule(int Seed, int Nodes, IReadOnlyList<FaultStep> Steps, bool ReadsAtLeader)
{
    /// <summary>The election timeout of the nodes' defaults is 10-20 ticks of 50 ms: a pause must outlast it.</summary>
    public const int MinimumPauseMs = 1500;

    public static FaultSchedule Generate(int seed, ChaosOptions options)
    {
        var random = new Random(seed);
        var nodes = options.Nodes ?? (random.Next(4) == 0 ? 5 : 3);
        var steps = new List<FaultStep>();
        for (var i = 0; i < options.FaultsPerSchedule; i++)
        {
            steps.Add(Draw(random, options.Faults[random.Next(options.Faults.Count)]));
        }

        // Drawn after the steps, so a seed keeps the faults it had before read routing was a choice.
        var readsAtLeader = options.ReadsAtLeader ?? random.Next(2) == 0;

        // Drawn after everything else, so an overlapping schedule is its seed's lone schedule with second faults
        // added, and a lone schedule draws exactly what it drew before overlaps existed.
        if (options.Overlap)
        {
            for (var i = 0; i < steps.Count; i++)
            {
                var partners = options.Faults.Where(kind => CanOverlap(steps[i].Kind, kind)).ToList();
                // One step in four stays alone, so an overlapping run still shows each fault by itself next to its pairs.
                if (partners.Count > 0 && random.Next(4) != 0)
                {
                    var second = Draw(random, partners[random.Next(partners.Count)]);
                    steps[i] = steps[i] with { With = new Overlap(second, random.Next(steps[i].HoldMs)) };
                }
            }
        }

        // Drawn after everything else too (session 21), so a seed changes only where this draw makes the pair: half
        // of the member replacements overlapped by a partition, a kill or a pause become the leader removing itself,
        // disturbed among the survivors right after its kill. Otherwise that point (one replacement in 24) met such a
        // fault too rarely to run, and then at whatever moment of the change the overlap's start fell.
        if (options.Overlap)
        {
            for (var i = 0; i < steps.Count; i++)
            {
                if (steps[i] is { Kind: FaultKind.MemberReplace, With: { Step.Kind: FaultKind.Partition or FaultKind.Kill or FaultKind.Pause } with } && random.Next(2) == 0)
                {
                    // Within the survivors' election (500-1000 ms of election timeout) or just after it.
                    steps[i] = steps[i] with { With = with with { StartAfterMs = random.Next(SurvivorDisturbanceMaxStartMs), AfterLeaderKill = true } };
                }
            }
        }

        return new FaultSchedule(seed, nodes, steps, readsAtLeader);
    }

    /// <summary>How long after the self-removing leader's kill a disturbance of the survivors starts, at most (exclusive).</summary>
    public const int SurvivorDisturbanceMaxStartMs = 1000;

    private static FaultStep Draw(Random random, FaultKind kind)
    {
        var hold = kind switch
        {
            FaultKind.Pause => MinimumPauseMs + random.Next(1500),
            FaultKind.GatewayPause => 1000 + random.Next(4000),
            // Up to past the gateway's 4 s deadline: a command it cannot deliver meanwhile ends as -UNKNOWN or
            // -TRYAGAIN, not only late.
            FaultKind.GatewayPartition => 2000 + random.Next(4000),
            FaultKind.Stall => 11_000 + random.Next(5000),
            FaultKind.GatewayStall => 2000 + random.Next(14_000),
            _ => 1000 + random.Next(2000),
        };
        return new FaultStep(
            kind,
            OnLeader: random.Next(2) == 0,
            Pick: random.Next(1_000_000),
            HoldMs: hold,
            RecoverMs: 500 + random.Next(1000),
            SlowDiskMs: 20 + random.Next(230),
            CannotSend: random.Next(2) == 0);
    }

    /// <summary>
    /// Whether two faults may hold at once (in either order). During the overlap the cluster may lose more than a
    /// quorum can spare (two kills of three, a partition and a pause): nothing is required of it meanwhile but
    /// safety, and once both healed it must answer again (<see cref="ChaosRun"/>). The second fault never aims its
    /// process faults (kill, pause, slow disk, full disk, clock jump, a membership change's nodes) at a node the first
    /// one holds.
    /// </summary>
    public static bool CanOverlap(FaultKind first, FaultKind second)
    {
        FaultKind[] membership = [FaultKind.MemberReplace, FaultKind.MemberUpdate];

        // A full disk needs the load to reach its node (it must fill the disk and stop within 30 s, a check of its
        // own), which a second fault that cuts the node off or takes the quorum away stops; and it holds for as long
        // as the disk takes to fill, not for a hold. A clock jump is a sequence of its own (kill, restart with the
        // clock ahead, leadership handed back or the leader killed) whose steps wait for elections a second fault
        // would steer; its leader kill with a second node down takes the quorum of three away for up to 30 s.
        // Neither says anything new beside another fault that kills or cuts off a node, which they already do. Beside
        // a membership change they do: an operator's change is refused, retried and committed while a node stops on a
        // full disk, or while a node whose clock ran ahead takes leadership and stamps the change.
        FaultKind[] alone = [FaultKind.DiskFull, FaultKind.ClockJump];
        if (alone.Contains(first) || alone.Contains(second))
        {
            return membership.Contains(first) || membership.Contains(second);
        }

        // Two membership changes at once are two operators: the product takes one at a time and refuses the other
        // until the first is applied, which each retries (ChaosRun runs both without disturbances of their own).

        // One fault at a time on the gateway: a kill and a pause of one process do not add up, and a gateway
        // partition's probes (a read while it holds, a write and a read within 5 s of its heal) measure a gateway that
        // a kill or a pause has taken away.
        FaultKind[] gateway = [FaultKind.GatewayKill, FaultKind.GatewayPause, FaultKind.GatewayPartition, FaultKind.GatewayStall];
        return !(gateway.Contains(first) && gateway.Contains(second));
    }

    /// <summary>Every fault of the schedule, second faults of overlapping steps included.</summary>
    public IEnumerable<FaultStep> AllSteps => Steps.SelectMany(step => step.With is { } with ? [step, with.Step] : new[] { step });

    public override string ToString()
    {
        var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"seed {Seed}: {Nodes} nodes, reads {(ReadsAtLeader ? "at the leader" : "round the members")}");
        for (var i = 0; i < Steps.Count; i++)
        {
            text.Append(CultureInfo.InvariantCulture, $"; {i + 1}. {Steps[i]}");
        }

        return text.ToString();
    }
}
