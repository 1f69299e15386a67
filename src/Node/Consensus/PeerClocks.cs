using System.Collections.Concurrent;

namespace Dcache.Node.Consensus;

/// <summary>
/// How far each peer's wall clock is from this node's, measured on the Raft streams, and the cluster's time that a
/// leader stamps on its proposals. Thread-safe: streams report what they hear from any thread.
/// </summary>
/// <remarks>
/// Every Raft message carries its sender's wall clock and echoes the last wall-clock reading it received from its
/// recipient. A node that hears a message at its own time <c>R</c>, carrying the peer's reading <c>S</c> and the echo
/// <c>E</c> of this node's own earlier reading, held there for <c>H</c> before the peer answered, estimates the peer's
/// offset as <c>S + (R - E - H) / 2 - R</c>, wrong by at most half the time on the wire (NTP's estimate). A leader stamps with its own clock moved by the lower median of the offsets of
/// the voters (itself counting 0): with a majority of correct clocks, one wrong clock, the leader's included, cannot
/// move the stamps, which are the only time the state machine knows (expiries, session idleness). Stamping ahead of
/// true time is the harmful error (keys expire early, and the cache's clock never goes back), so with an even number
/// of readings the lower middle one wins. A follower hears only its leader, and two readings would leave a follower
/// whose clock is behind on its own time, serving keys past their expiry; so a leader publishes its correction (the
/// cluster's time minus its own clock) on its messages, and a follower reads by the leader's clock plus that.
/// </remarks>
public sealed class PeerClocks(TimeProvider clock, TimeSpan readingsUsableFor)
{
    /// <summary>A round trip longer than this gives no reading: the echo is too old to bound the error usefully.</summary>
    public static readonly TimeSpan MaxRoundTrip = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long a reading counts, at least: a leader hears every reachable voter each heartbeat, so an older reading is
    /// of a peer that stopped answering, which may since have restarted with another clock (chaos seed 760403: a
    /// reading 7 s old of a peer that had run 86 min ahead until it restarted with its clock right).
    /// </summary>
    public static readonly TimeSpan DefaultReadingsUsableFor = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How long the cluster's time that a majority of voters' clocks last gave is carried forward on the monotonic
    /// clock while fewer voters answer in time to give readings (round trips over <see cref="MaxRoundTrip"/>, a voter
    /// replaced).
    /// </summary>
    public static readonly TimeSpan MajorityTimeUsableFor = TimeSpan.FromSeconds(30);

    public PeerClocks(TimeProvider clock)
        : this(clock, DefaultReadingsUsableFor)
    {
    }

    /// <summary>How long a reading counts toward the cluster's time.</summary>
    public TimeSpan ReadingsUsableFor { get; } = readingsUsableFor;

    private readonly ConcurrentDictionary<ulong, Reading> _lastHeardReading = new();
    private readonly ConcurrentDictionary<ulong, Measurement> _peers = new();
    private readonly ConcurrentDictionary<ulong, Correction> _reportedCorrections = new();
    private Correction? _published;
    private ClusterTime? _lastFromMajority;

    public long NowMs => clock.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>
    /// This node's reading, the echo of <paramref name="peer"/>'s last reading and how long ago that reading arrived,
    /// for a message to it.
    /// </summary>
    public (long ReadingMs, long EchoMs, long EchoHeldMs) ForMessageTo(ulong peer)
    {
        if (!_lastHeardReading.TryGetValue(peer, out var echo))
        {
            return (NowMs, 0, 0);
        }

        return (NowMs, echo.PeerMs, (long)clock.GetElapsedTime(echo.AtTimestamp).TotalMilliseconds);
    }

    /// <summary>What this node's messages carry as its correction to the cluster's time: set while it leads, else null.</summary>
    public long? PublishedClusterOffsetMs => Volatile.Read(ref _published)?.OffsetMs;

    /// <summary>Set by the leader each time it computes its correction; null when this node does not lead.</summary>
    public void Publish(long? clusterOffsetMs) =>
        Volatile.Write(ref _published, clusterOffsetMs is { } offset ? new Correction(offset, clock.GetTimestamp()) : null);

    /// <summary>
    /// A message from <paramref name="peer"/> arrived with its reading, its echo of this node's (0: none) and, from a
    /// leader, its correction to the cluster's time.
    /// </summary>
    public void Heard(ulong peer, long readingMs, long echoMs, long? clusterOffsetMs = null, long echoHeldMs = 0)
    {
        if (readingMs <= 0)
        {
            return; // a build from before clock readings
        }

        if (clusterOffsetMs is { } reported)
        {
            _reportedCorrections[peer] = new Correction(reported, clock.GetTimestamp());
        }
        else
        {
            _reportedCorrections.TryRemove(peer, out _);
        }

        _lastHeardReading[peer] = new Reading(readingMs, clock.GetTimestamp());
        // The time on the wire both ways: the echo's age less the time the peer held it before answering.
        var roundTrip = NowMs - echoMs - echoHeldMs;
        if (echoMs > 0 && echoHeldMs >= 0 && roundTrip >= 0 && roundTrip <= (long)MaxRoundTrip.TotalMilliseconds)
        {
            // The peer's time now, kept against the monotonic clock: if this node's wall clock steps later, the
            // offsets move by the step (and the median corrects for it) instead of the readings aging wrongly.
            _peers[peer] = new Measurement(readingMs + (roundTrip / 2), clock.GetTimestamp());
        }
    }

    /// <summary>
    /// The stream to <paramref name="peer"/> broke: drop what was heard from it. A peer that restarts breaks its streams,
    /// and its new process may run another clock; an old reading kept until it ages out would be counted as its clock.
    /// </summary>
    public void Forget(ulong peer)
    {
        _peers.TryRemove(peer, out _);
        _lastHeardReading.TryRemove(peer, out _);
        _reportedCorrections.TryRemove(peer, out _);
    }

    /// <summary>
    /// Each peer's clock minus this node's, in ms, by its last reading that still counts (those of voters are what the
    /// cluster's time is made of), so an operator sees no reading too old to use (a removed peer's would stay for good).
    /// </summary>
    public IReadOnlyDictionary<ulong, long> Offsets
    {
        get
        {
            var now = NowMs;
            var timestamp = clock.GetTimestamp();
            return _peers.Where(pair => StillCounts(pair.Value.AtTimestamp, timestamp)).ToDictionary(pair => pair.Key, pair => pair.Value.PeerNowMs(clock, timestamp) - now);
        }
    }

    /// <summary>
    /// Whether a majority of voters, or a leader, has given this node the cluster's time since it started. Until then
    /// (a restart: no readings yet) its estimate is its own clock, or the median of a minority's, which may be hours off.
    /// </summary>
    public bool HasHeardClusterTime => Volatile.Read(ref _lastFromMajority) is not null;

    /// <summary>
    /// What this node adds to its clock to get the cluster's time: the lower median of its voters' recent offsets (its
    /// own counts 0 if it is a voter), so a minority of wrong clocks, its own included, does not move it. With recent readings of too
    /// few voters for their clocks and its own to be a majority (the voters changed, a voter stopped answering), the
    /// cluster's time the last such majority (or, on a follower, its leader) gave, carried forward on the monotonic
    /// clock for <see cref="MajorityTimeUsableFor"/>, or the median of the few if that is earlier. Alone, a node whose
    /// clock is hours ahead would stamp its own time, and the cache's clock, which never goes back, would stay hours
    /// ahead (chaos seed 760340: a leader with a clock 166 min ahead, the voter it had read removed from the cluster);
    /// a follower, which hears no voter but its leader, would judge its READONLY reads by its own clock as soon as its
    /// leader fell silent. Without either, the median of the few: holding time still instead would expire every key
    /// written meanwhile with a shorter TTL as soon as time moves on.
    /// </summary>
    public long StampOffsetMs(IReadOnlyCollection<ulong> voters, ulong self)
    {
        var now = NowMs;
        var timestamp = clock.GetTimestamp();
        var offsets = new List<long>(8);
        foreach (var voter in voters)
        {
            if (voter != self && _peers.TryGetValue(voter, out var measured) && StillCounts(measured.AtTimestamp, timestamp))
            {
                offsets.Add(measured.PeerNowMs(clock, timestamp) - now);
            }
        }

        // Only a voter's own clock is one of the voters' clocks. A learner or a removed leader that counted its own
        // would make "a majority" of itself and one wrong voter, and carry that time forward as the majority's.
        var selfVotes = voters.Contains(self);
        if (offsets.Count + (selfVotes ? 1 : 0) >= (voters.Count / 2) + 1)
        {
            if (selfVotes)
            {
                offsets.Add(0);
            }

            var majorityMedian = LowerMedian(offsets);
            Volatile.Write(ref _lastFromMajority, new ClusterTime(now + majorityMedian, timestamp));
            return majorityMedian;
        }

        // Too few: this node's own clock joins them, voter or not, so that one reading ahead cannot move the time ahead.
        offsets.Add(0);
        var median = LowerMedian(offsets);
        if (Volatile.Read(ref _lastFromMajority) is { } last && clock.GetElapsedTime(last.AtTimestamp, timestamp) <= MajorityTimeUsableFor)
        {
            // Never later than what the few readings say: stamping ahead is the harmful error.
            return Math.Min(last.ClusterNowMs(clock, timestamp) - now, median);
        }

        return median;
    }

    /// <summary>
    /// What this node adds to its clock to get the cluster's time by way of <paramref name="leader"/>: the leader's
    /// offset plus the correction it published; false without a recent reading of both. The time so given is kept as
    /// the last a majority gave (the leader's voters), for <see cref="StampOffsetMs"/> once the leader's word stops: a
    /// follower hears no voter but its leader, so without it its own clock alone would be the median.
    /// </summary>
    public bool TryClusterOffsetVia(ulong leader, out long offsetMs)
    {
        var timestamp = clock.GetTimestamp();
        if (_peers.TryGetValue(leader, out var measured) && StillCounts(measured.AtTimestamp, timestamp)
            && _reportedCorrections.TryGetValue(leader, out var reported) && StillCounts(reported.AtTimestamp, timestamp))
        {
            var now = NowMs;
            offsetMs = measured.PeerNowMs(clock, timestamp) - now + reported.OffsetMs;
            Volatile.Write(ref _lastFromMajority, new ClusterTime(now + offsetMs, timestamp));
            return true;
        }

        offsetMs = 0;
        return false;
    }

    private static long LowerMedian(List<long> offsets)
    {
        offsets.Sort();
        return offsets[(offsets.Count - 1) / 2];
    }

    private bool StillCounts(long heardAtTimestamp, long nowTimestamp) => clock.GetElapsedTime(heardAtTimestamp, nowTimestamp) <= ReadingsUsableFor;

    /// <summary>A peer's clock reading as it arrived, and this node's monotonic time then.</summary>
    private readonly record struct Reading(long PeerMs, long AtTimestamp);

    /// <summary>The peer's clock reading (corrected for half the round trip) and this node's monotonic time when it was taken.</summary>
    private readonly record struct Measurement(long PeerMs, long AtTimestamp)
    {
        public long PeerNowMs(TimeProvider clock, long timestamp) => PeerMs + (long)clock.GetElapsedTime(AtTimestamp, timestamp).TotalMilliseconds;
    }

    /// <summary>The cluster's time a majority of voters' clocks gave, and this node's monotonic time then.</summary>
    private sealed record ClusterTime(long ClusterMs, long AtTimestamp)
    {
        public long ClusterNowMs(TimeProvider clock, long timestamp) => ClusterMs + (long)clock.GetElapsedTime(AtTimestamp, timestamp).TotalMilliseconds;
    }

    /// <summary>A leader's correction to the cluster's time, and this node's monotonic time when it was made or heard.</summary>
    private sealed record Correction(long OffsetMs, long AtTimestamp);
}
