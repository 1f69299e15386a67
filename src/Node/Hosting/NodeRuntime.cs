using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Transport;
using Dcache.Protocol;
using Dcache.Raft;
using Dcache.Storage;
using Microsoft.Extensions.Options;

namespace Dcache.Node.Hosting;

/// <summary>
/// Opens the node's storage, rebuilds its cache, and runs the Raft driver and transport for the host's lifetime.
/// Stopping hands leadership to another voter first, so a planned restart does not cost an election timeout.
/// </summary>
public sealed partial class NodeRuntime : IHostedLifecycleService, IAsyncDisposable
{
    private readonly NodeOptions _options;
    private readonly ILogger<NodeRuntime> _logger;
    private readonly NodeStorage _storage;
    private readonly SnapshotStoreAdapter _snapshots;
    private readonly PeerTransport _transport;
    private readonly LeaderForwarder _forwarder;
    private readonly CancellationTokenSource _closing = new();
    private readonly IHostApplicationLifetime _lifetime;
    // Where shutdown is: what the 5 s bound on a failed node's shutdown reports when it cuts one short.
    private volatile string _shutdownStage = "running";

    public NodeRuntime(IOptions<NodeOptions> options, ILoggerFactory loggers, TimeProvider clock, NodeMetrics metrics, IHostApplicationLifetime lifetime)
    {
        _options = options.Value;
        _lifetime = lifetime;
        _logger = loggers.CreateLogger<NodeRuntime>();
        Directory.CreateDirectory(_options.DataDirectory);
        _storage = NodeStorage.Open(new StorageOptions { DataDirectory = _options.DataDirectory, TestOnlySlowDiskFile = _options.TestOnlySlowDiskFile }, _options.NodeId, _options.ClusterId, loggers);
        var members = _options.ParseInitialCluster();
        var log = _storage.RaftLog;
        if (!_options.Join && log.LastIndex == 0 && log.Snapshot.Membership.Voters.Count == 0)
        {
            // Recorded first: a crash before the log is written founds it again, and records it again.
            _storage.Metadata.RecordFoundingEntryFormat(_options.AdvertisedEntryFormat);
            // Each founding entry carries its member's address, so every member's address is in the log.
            var founding = Membership.Of(members.Keys, contexts: members);
            _storage.Metadata.RecordFoundingLog(FoundingLog.OfBootstrap(_options.ClusterId, founding));
            log.Bootstrap(founding);
            var voters = string.Join(",", members.Keys);
            Log.Bootstrapped(_logger, _options.NodeId, voters);
        }

        if (_options.TestOnlyUnsafeReads)
        {
            Log.UnsafeReadsOn(_logger);
        }

        if (_options.TestOnlySlowDiskFile.Length > 0)
        {
            Log.SlowDiskOn(_logger, _options.TestOnlySlowDiskFile);
        }

        if (clock is TestOnlyOffsetClock skewed)
        {
            Log.ClockOffsetOn(_logger, skewed.Offset);
        }

        _snapshots = new SnapshotStoreAdapter(_storage.Snapshots);
        var metadata = _storage.Metadata;
        Credentials = new ClusterCredentials(_options.ClusterId, _options.ClusterSecret, _options.CacheSettings, metadata.FoundingLog ?? "", metadata.RecordFoundingLog);
        Addresses = new AddressBook(members);
        _forwarder = new LeaderForwarder(Credentials, MessageLimits.MaxMaxMessageBytes, metrics, loggers.CreateLogger<LeaderForwarder>());

        var raftOptions = new RaftOptions
        {
            Id = _options.NodeId,
            ElectionTicks = _options.ElectionTicks,
            HeartbeatTicks = _options.HeartbeatTicks,
            // An Append must fit in one message: its entries' counted sizes understate their framing on the wire by a
            // few bytes each, hence half of what one message carries (one entry alone may take all of it).
            MaxSizePerMessage = (ulong)Math.Min(1024 * 1024, MessageLimits.MaxItemBytes(_options.MaxMessageBytes) / 2),
        };
        var cache = new CacheStateMachine(new CacheStateMachineOptions
        {
            MemoryCapBytes = _options.MaxMemoryBytes,
            SessionTimeout = TimeSpan.FromSeconds(_options.SessionTimeoutSeconds),
        });
        Driver = new RaftDriver(
            new RaftDriverSettings(
                _options.NodeId,
                raftOptions,
                TimeSpan.FromMilliseconds(_options.TickMilliseconds),
                _options.SnapshotEntries,
                _options.SnapshotCatchUpEntries,
                TimeSpan.FromMilliseconds(_options.ExpiryPurgeMilliseconds),
                TimeSpan.FromMilliseconds(_options.RequestTimeoutMilliseconds))
            {
                TestOnlyUnsafeReads = _options.TestOnlyUnsafeReads,
                FoundingEntryFormat = _storage.Metadata.FoundingEntryFormat ?? 0,
                // Whichever is smaller: what one message carries, or what one page of the Raft log holds (4 MiB less a
                // few dozen bytes). Past the page, every node stopped as it saved the entry (a 5 MiB SET stopped all three).
                MaxEntryBytes = Math.Min(MessageLimits.MaxItemBytes(_options.MaxMessageBytes), _storage.RaftLog.MaxEntryDataBytes),
            },
            _storage.RaftLog,
            _snapshots,
            cache,
            Addresses,
            (index, membership) => _storage.Metadata.SaveMembership(index, membership),
            clock,
            metrics,
            loggers.CreateLogger<RaftDriver>(),
            _forwarder);
        metrics.Observe(() => Driver.Status);
        metrics.ObserveClockOffsets(() => Driver.Clocks.Offsets);
        Driver.ClosingToken = _closing.Token;
        // Any entry in the log must reach any peer, whatever this node's own limit (a follower with a lower one may lead
        // later): see the Raft service's message sizes in Program.cs.
        _transport = new PeerTransport(_options.NodeId, _options.GrpcUrl, Credentials, MessageLimits.MaxMaxMessageBytes, _options.AdvertisedEntryFormat, Driver.Clocks, Driver, loggers.CreateLogger<PeerTransport>());
        _transport.SetPeers(Addresses.All);
        Addresses.Changed += _transport.SetPeers;
    }

    public RaftDriver Driver { get; }

    public AddressBook Addresses { get; }

    public ClusterCredentials Credentials { get; }

    /// <summary>Cancelled once this node has handed over leadership on shutdown: long-lived inbound streams end then, so the server can stop.</summary>
    public CancellationToken Closing => _closing.Token;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>The process's exit code: 0, or <see cref="FailedExitCode"/> once the Raft loop failed.</summary>
    public int ExitCode => Driver.Completion.IsFaulted ? FailedExitCode : 0;

    /// <summary>Exit code of a node that stopped because its Raft loop failed (e.g. its disk is full).</summary>
    public const int FailedExitCode = 3;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        Driver.Start(_transport);
        // A node whose loop failed answers nothing useful: stop the process (fail-stop), so a supervisor restarts it and
        // clients' commands go to the other nodes, instead of a live process that answers status but never commits.
        _ = Driver.Completion.ContinueWith(
            loop =>
            {
                var cause = loop.Exception?.GetBaseException().Message ?? "unknown";
                Log.StoppingAfterLoopFailure(_logger, FailedExitCode, cause);
                _lifetime.StopApplication();
                _ = ExitIfStillRunningAsync();
            },
            CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted,
            TaskScheduler.Default);
        return Task.CompletedTask;
    }

    /// <summary>
    /// How long a node whose loop failed may take to shut down before it exits regardless. Shutting down after a
    /// failure has nothing to hand over and takes well under a second; but the chaos suite's full disk once left a
    /// node that had logged its stop alive, its ports closed, for minutes (seed 140002): a process that never exits
    /// is the zombie fail-stop exists to prevent, and no supervisor ever sees exit code 3.
    /// </summary>
    private static readonly TimeSpan FailedShutdownBound = TimeSpan.FromSeconds(5);

    private async Task ExitIfStillRunningAsync()
    {
        // A deadline, not a wait for something to happen: the normal shutdown ends the process long before.
        await Task.Delay(FailedShutdownBound).ConfigureAwait(false);
        await Console.Error.WriteLineAsync($"The node's shutdown did not finish within {FailedShutdownBound.TotalSeconds:F0} s of its Raft loop failing (it got as far as: {_shutdownStage}); it exits now (exit code {FailedExitCode})").ConfigureAwait(false);
        ImmediateExit.Now(FailedExitCode);
    }

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Runs before any service (the web server included) stops, while peers can still reach this node.</summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        _shutdownStage = "handing over leadership";
        try
        {
            await HandOverLeadershipAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException)
        {
            // The loop stopped meanwhile (it failed, and that failure is what stops the node): nothing to hand over.
        }
        finally
        {
            _shutdownStage = "ending inbound streams";
            await _closing.CancelAsync().ConfigureAwait(false);
            _shutdownStage = "stopping the host's services (the web server among them)";
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _shutdownStage = "stopping the Raft loop";
        await Driver.DisposeAsync().ConfigureAwait(false);
        _shutdownStage = "closing the peer streams";
        await _transport.DisposeAsync().ConfigureAwait(false);
        await _forwarder.DisposeAsync().ConfigureAwait(false);
        _shutdownStage = "stopping the host's other services";
    }

    public Task StoppedAsync(CancellationToken cancellationToken)
    {
        _shutdownStage = "disposing the host's services";
        return Task.CompletedTask;
    }

    /// <summary>The host has stopped and been disposed: what remains is the process's own exit.</summary>
    public void NoteHostEnded() => _shutdownStage = "the host ended; the process exits (threads, exit handlers)";

    private async Task HandOverLeadershipAsync(CancellationToken cancellationToken)
    {
        if (Driver.Completion.IsCompleted || Driver.Status.Role != Role.Leader)
        {
            return;
        }

        var target = await Driver.TransferLeadershipAsync(0).ConfigureAwait(false);
        Log.HandingOver(_logger, target, target != 0);
        if (target != 0)
        {
            await Driver.WaitForStatusAsync(status => status.Role != Role.Leader, _options.ElectionTimeout * 2, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Driver.DisposeAsync().ConfigureAwait(false);
        await _transport.DisposeAsync().ConfigureAwait(false);
        await _forwarder.DisposeAsync().ConfigureAwait(false);
        _shutdownStage = "closing storage (the Raft log, snapshots, SQLite)";
        _storage.Dispose();
        _closing.Dispose();
        _shutdownStage = "storage closed";
    }

    private static partial class Log
    {
        [LoggerMessage(Level = LogLevel.Warning, Message = "TEST ONLY: TestOnlyUnsafeReads is set; linearizable reads skip ReadIndex and may return stale data")]
        public static partial void UnsafeReadsOn(ILogger logger);

        [LoggerMessage(Level = LogLevel.Warning, Message = "TEST ONLY: TestOnlySlowDiskFile is set; durable commits sleep for the milliseconds in {Path}")]
        public static partial void SlowDiskOn(ILogger logger, string path);

        [LoggerMessage(Level = LogLevel.Warning, Message = "TEST ONLY: TestOnlyClockOffset is set; this node's wall clock is moved by {Offset} (what it stamps as leader moves the cache's clock)")]
        public static partial void ClockOffsetOn(ILogger logger, TimeSpan offset);

        [LoggerMessage(Level = LogLevel.Information, Message = "Node {NodeId} bootstrapped a new cluster with voters {Voters}")]
        public static partial void Bootstrapped(ILogger logger, ulong nodeId, string voters);

        [LoggerMessage(Level = LogLevel.Critical, Message = "The node stops (exit code {ExitCode}) because its Raft loop failed: {Cause}")]
        public static partial void StoppingAfterLoopFailure(ILogger logger, int exitCode, string cause);

        [LoggerMessage(Level = LogLevel.Information, Message = "Shutting down: handing leadership to node {Target} (started: {Started})")]
        public static partial void HandingOver(ILogger logger, ulong target, bool started);
    }
}
