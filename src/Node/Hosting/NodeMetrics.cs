using System.Diagnostics.Metrics;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Raft;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Hosting;

/// <summary>
/// The node's metrics (meter <see cref="MeterName"/>, exported at /metrics): Raft state read from the driver's
/// published status, and the events the loop records (leader changes, proposals, durable commits, snapshots).
/// </summary>
public sealed class NodeMetrics : IDisposable
{
    public const string MeterName = "Dcache.Node";

    /// <summary>64 KiB to 16 GiB, by fours.</summary>
    public static readonly long[] SnapshotSizeBuckets = [1L << 16, 1L << 18, 1L << 20, 1L << 22, 1L << 24, 1L << 26, 1L << 28, 1L << 30, 1L << 32, 1L << 34];

    /// <summary>Seconds, fine-grained below a millisecond where durable commits and reads live.</summary>
    public static readonly double[] LatencyBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

    private readonly Meter _meter = new(MeterName);
    private readonly Counter<long> _leaderChanges;
    private readonly Counter<long> _proposals;
    private readonly Histogram<double> _durableCommit;
    private readonly Histogram<double> _snapshotDuration;
    private readonly Histogram<long> _snapshotSize;
    private readonly UpDownCounter<long> _commandStreams;
    private readonly Counter<long> _forwardedWrites;
    private long _snapshotFailures;
    private long _snapshotsInstalled;
    private Func<NodeStatusView>? _status;
    private Func<IReadOnlyDictionary<ulong, long>>? _clockOffsets;

    public NodeMetrics()
    {
        _leaderChanges = _meter.CreateCounter<long>("dcache.raft.leader_changes", "{change}", "Times this node came to know a leader: a new one, or the same one again after a spell with none (an election it won again)");
        _proposals = _meter.CreateCounter<long>("dcache.raft.proposals", "{proposal}", "Proposals by result: accepted, not_leader, transfer_in_progress, conf_change_pending, invalid_conf_change, overloaded");
        _durableCommit = _meter.CreateHistogram("dcache.storage.durable_commit.duration", "s", "Time to make one Ready durable (one Save: one sync)",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = LatencyBuckets });
        _snapshotDuration = _meter.CreateHistogram("dcache.snapshot.duration", "s", "Time to write a snapshot of the cache",
            tags: null, advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] });
        // The default boundaries stop at 10,000, which puts every real snapshot in +Inf.
        _snapshotSize = _meter.CreateHistogram<long>("dcache.snapshot.size", "By", "Size of each snapshot written",
            tags: null, advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = SnapshotSizeBuckets });
        _commandStreams = _meter.CreateUpDownCounter<long>("dcache.node.command_streams", "{stream}", "Gateway command streams open on this node");
        _forwardedWrites = _meter.CreateCounter<long>("dcache.node.forwarded_writes", "{write}",
            "Writes this follower forwarded to its leader for a gateway that cannot reach it, by outcome: answered (the leader's reply), not_leader, unavailable (surely not applied), outcome_unknown, other");

        _meter.CreateObservableGauge("dcache.raft.term", () => (long)(Status?.Term ?? 0), "{term}", "Current Raft term");
        _meter.CreateObservableGauge("dcache.raft.role", () => (int)(Status?.Role ?? Role.Follower), "{role}", "1 follower, 2 pre-candidate, 3 candidate, 4 leader");
        _meter.CreateObservableGauge("dcache.raft.leader", () => (long)(Status?.LeaderId ?? 0), "{node}", "The leader this node knows (0: none)");
        _meter.CreateObservableGauge("dcache.raft.commit_index", () => (long)(Status?.CommitIndex ?? 0), "{entry}", "Highest index known committed");
        _meter.CreateObservableGauge("dcache.raft.applied_index", () => (long)(Status?.AppliedIndex ?? 0), "{entry}", "Highest index applied to the cache");
        _meter.CreateObservableGauge("dcache.raft.log_entries", () => Status is { } s ? (long)(s.LastIndex - Math.Min(s.LastIndex, s.FirstIndex - 1)) : 0L, "{entry}", "Entries held in the Raft log");
        _meter.CreateObservableGauge("dcache.cache.keys", () => Status?.Cache.Keys ?? 0, "{key}", "Keys in the cache (expired ones not yet purged included)");
        _meter.CreateObservableGauge("dcache.cache.bytes", () => Status?.Cache.UsedBytes ?? 0L, "By", "Bytes the memory cap counts");
        _meter.CreateObservableGauge("dcache.cache.sessions", () => (long)(Status?.Cache.Sessions ?? 0), "{session}", "Client write sessions held for retry deduplication (each until idle for the session timeout)");
        _meter.CreateObservableCounter("dcache.cache.hits", () => Status?.Cache.Hits ?? 0L, "{read}", "Reads that found their key");
        _meter.CreateObservableCounter("dcache.cache.misses", () => Status?.Cache.Misses ?? 0L, "{read}", "Reads that did not");
        _meter.CreateObservableCounter("dcache.cache.evictions", () => Status?.Cache.EvictedKeys ?? 0L, "{key}", "Keys evicted under the memory cap");
        _meter.CreateObservableGauge("dcache.node.peer_clock_offset", ClockOffsets, "s", "Each peer's wall clock minus this node's, measured on the Raft streams (within half a round trip)");
        _meter.CreateObservableCounter("dcache.cache.expirations", () => Status?.Cache.ExpiredKeys ?? 0L, "{key}", "Expired keys reclaimed");
        // Observed rather than added to, so that both are exported (at 0) before the first event: an alert on their rate
        // then sees 0, not no data.
        _meter.CreateObservableCounter("dcache.snapshot.failures", () => Interlocked.Read(ref _snapshotFailures), "{snapshot}",
            "Snapshots this node began and could not write (it tries again after more entries; the log keeps growing meanwhile)");
        _meter.CreateObservableCounter("dcache.snapshot.installs", () => Interlocked.Read(ref _snapshotsInstalled), "{snapshot}",
            "Snapshots received from the leader and installed (a follower too far behind for the log)");
    }

    private NodeStatusView? Status => _status?.Invoke();

    /// <summary>Where the gauges read from (the driver's published status).</summary>
    public void Observe(Func<NodeStatusView> status) => _status = status;

    /// <summary>Where the clock-offset gauge reads from (ms per peer).</summary>
    public void ObserveClockOffsets(Func<IReadOnlyDictionary<ulong, long>> offsets) => _clockOffsets = offsets;

    private IEnumerable<Measurement<double>> ClockOffsets() =>
        _clockOffsets?.Invoke().Select(pair => new Measurement<double>(pair.Value / 1000.0, new KeyValuePair<string, object?>("peer", pair.Key.ToString(System.Globalization.CultureInfo.InvariantCulture))))
        ?? [];

    /// <summary>A gateway's command stream opened (+1) or ended (-1).</summary>
    public void CommandStreamsChanged(int delta) => _commandStreams.Add(delta);

    /// <summary>A write forwarded to the leader ended with <paramref name="reply"/> (the leader's, or the failure to reach it).</summary>
    public void Forwarded(Proto.Reply reply) => _forwardedWrites.Add(1, new KeyValuePair<string, object?>("outcome", reply.Failure?.Kind switch
    {
        null => "answered",
        Proto.FailureKind.NotLeader => "not_leader",
        Proto.FailureKind.Unavailable => "unavailable",
        Proto.FailureKind.OutcomeUnknown => "outcome_unknown",
        _ => "other",
    }));

    public void LeaderChanged() => _leaderChanges.Add(1);

    public void Proposed(ProposeStatus status) => _proposals.Add(1, new KeyValuePair<string, object?>("result", ResultName(status)));

    public void DurableCommit(TimeSpan elapsed) => _durableCommit.Record(elapsed.TotalSeconds);

    public void SnapshotWritten(TimeSpan elapsed, long bytes)
    {
        _snapshotDuration.Record(elapsed.TotalSeconds);
        _snapshotSize.Record(bytes);
    }

    public void SnapshotFailed() => Interlocked.Increment(ref _snapshotFailures);

    public void SnapshotInstalled() => Interlocked.Increment(ref _snapshotsInstalled);

    private static string ResultName(ProposeStatus status) => status switch
    {
        ProposeStatus.Accepted => "accepted",
        ProposeStatus.NotLeader => "not_leader",
        ProposeStatus.TransferInProgress => "transfer_in_progress",
        ProposeStatus.ConfChangePending => "conf_change_pending",
        ProposeStatus.InvalidConfChange => "invalid_conf_change",
        ProposeStatus.Overloaded => "overloaded",
        _ => "other",
    };

    public void Dispose() => _meter.Dispose();
}
