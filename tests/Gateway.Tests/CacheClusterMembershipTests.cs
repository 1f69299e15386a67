using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using Xunit.Abstractions;
using static Dcache.Gateway.Tests.CacheClusterBatchTests;

namespace Dcache.Gateway.Tests;

/// <summary>
/// The cluster client follows the leader's membership: a node the leader no longer lists, and that is not one of the
/// configured nodes, is let go after <see cref="ClusterOptions.RemovedNodeGraceMilliseconds"/> (its connection closed,
/// no more polls, no more per-node series), so that a cluster whose nodes are replaced over time does not leave the
/// gateway holding every address it ever had. Configured nodes are kept; a node listed again is connected to anew.
/// </summary>
/// <remarks>
/// Run alone: every cluster client's meter has the same name, so the OpenTelemetry reader here would take in other
/// tests' clients too, and one disposed meanwhile ends the instrument's stream that they share in the reader.
/// </remarks>
[Collection(ClusterMeterCollection.Name)]
public sealed class CacheClusterMembershipTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private const int GraceMilliseconds = 1_000;

    [Fact]
    public async Task ANodeLeftOutOfTheMembershipIsLetGoAfterTheGracePeriodWhileASeedIsKeptAndIsUsedAgainOnceListedAgain()
    {
        await using var cluster = await ScriptedCluster.StartAsync(_ => null);
        var (leader, seed, removed) = (cluster.Leader, cluster.Seed, cluster.Removed);
        await using var client = Connect(new ClusterOptions
        {
            Nodes = $"{leader.Address},{seed.Address}",
            StatusPollMilliseconds = 50,
            RemovedNodeGraceMilliseconds = GraceMilliseconds,
        });
        using var exported = new ExportedNodeSeries();

        // Learned from the leader's membership, and served reads.
        cluster.List(leader, seed, removed);
        var first = await WaitForAsync(() => Connection(client, removed.Address), "the gateway never learned the node from the membership");
        await ReadUntilServedByRemovedAsync(client);
        Assert.True(removed.OpenStreams > 0);
        Assert.Contains(removed.Address, new NodeCommandsGauge().Nodes());
        Assert.Contains(removed.Address, exported.Collect());

        // Removed (with the seed): not let go before the grace period is over, then let go.
        var removedAt = System.Diagnostics.Stopwatch.GetTimestamp();
        cluster.List(leader);
        await WaitForAsync(() => client.View.Nodes == 1 ? client : null, "the gateway never took the new membership in");
        var meanwhile = Connection(client, removed.Address);
        // Checked only while the grace period cannot be over (it starts once the gateway sees the node left out, after
        // removedAt): a test thread descheduled past it would find the node let go, rightly.
        if (System.Diagnostics.Stopwatch.GetElapsedTime(removedAt) < TimeSpan.FromMilliseconds(GraceMilliseconds))
        {
            Assert.Same(first, meanwhile);
        }
        await WaitForAsync(() => Connection(client, removed.Address) is null ? client : null, "the removed node was never let go");
        var keptFor = System.Diagnostics.Stopwatch.GetElapsedTime(removedAt);
        output.WriteLine($"let go {keptFor.TotalMilliseconds:F0} ms after its removal (grace {GraceMilliseconds} ms)");
        Assert.True(keptFor >= TimeSpan.FromMilliseconds(GraceMilliseconds), $"let go after {keptFor.TotalMilliseconds:F0} ms, within the grace period");

        // Its streams are closed, it is polled no more, and its series are gone, from the gauge and from what an
        // exporter collects (not left at their last value).
        await WaitForAsync(() => removed.OpenStreams == 0 ? client : null, () => $"{removed.OpenStreams} streams still open to the removed node");
        var pollsOfRemoved = removed.StatusRequests;
        var pollsOfSeed = seed.StatusRequests;
        var pollsOfLeader = leader.StatusRequests;
        await WaitForAsync(() => leader.StatusRequests >= pollsOfLeader + 10 ? client : null, "the leader is no longer polled");
        Assert.Equal(pollsOfRemoved, removed.StatusRequests);
        Assert.DoesNotContain(removed.Address, new NodeCommandsGauge().Nodes());
        Assert.DoesNotContain(removed.Address, exported.Collect());

        // The seed, as long out of the membership, is kept: still known, polled and exported, though sent no commands.
        var keptSeed = Connection(client, seed.Address);
        Assert.NotNull(keptSeed);
        Assert.False(keptSeed.IsMember);
        Assert.True(seed.StatusRequests > pollsOfSeed, "the seed is no longer polled");
        Assert.Contains(seed.Address, new NodeCommandsGauge().Nodes());
        Assert.Contains(seed.Address, exported.Collect());

        // Added back at the same address: a new connection, which serves reads again.
        cluster.List(leader, removed);
        var second = await WaitForAsync(() => Connection(client, removed.Address), "the gateway never learned the node again");
        Assert.NotSame(first, second);
        var receivedBefore = removed.CommandsReceived;
        await ReadUntilServedByRemovedAsync(client);
        Assert.True(removed.CommandsReceived > receivedBefore);
        Assert.Contains(removed.Address, new NodeCommandsGauge().Nodes());
    }

    [Fact]
    public async Task CommandsInFlightOnANodeLetGoAreRetriedAtAnotherMember()
    {
        // The removed node never answers "stuck" keys, and an attempt would wait a minute for them: only letting go of
        // the node ends the attempt.
        await using var cluster = await ScriptedCluster.StartAsync(command => command.Get.Key.ToStringUtf8().StartsWith("stuck", StringComparison.Ordinal) ? ScriptedNode.Unanswered : null);
        var (leader, removed) = (cluster.Leader, cluster.Removed);
        await using var client = Connect(new ClusterOptions
        {
            Nodes = leader.Address,
            StatusPollMilliseconds = 50,
            RemovedNodeGraceMilliseconds = GraceMilliseconds,
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 120_000,
        });
        cluster.List(leader, removed);
        await WaitForAsync(() => Connection(client, removed.Address), "the gateway never learned the node from the membership");

        // Reads go round the members: one of these is soon held by the removed node.
        var calls = new List<ClusterCall>();
        var deadline = DateTime.UtcNow + Patience;
        while (removed.CommandsReceived == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "no read reached the node");
            var call = new ClusterCall(Get($"stuck-{calls.Count}"), ReadMode.Linearizable);
            calls.Add(call);
            client.ExecuteAll([call], CancellationToken.None);
            await Task.WhenAny(call.Reply, Task.Delay(50));
        }

        cluster.List(leader);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);
        Assert.Null(Connection(client, removed.Address));
        Assert.All(replies, reply => Assert.StartsWith("leader:stuck-", reply.Bulk.ToStringUtf8(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task ANodeLeftOutOfTheMembershipGetsNoCommandsEvenWhileNoMemberCanTakeThem()
    {
        await using var cluster = await ScriptedCluster.StartAsync(_ => null);
        var (leader, removed) = (cluster.Leader, cluster.Removed);
        await using var client = Connect(new ClusterOptions
        {
            Nodes = leader.Address,
            StatusPollMilliseconds = 50,
            // Still known, and healthy, for the whole test: only its absence from the membership keeps commands off it.
            RemovedNodeGraceMilliseconds = 600_000,
            BreakAfterFailures = 2,
            AttemptTimeoutMilliseconds = 200,
            DeadlineMilliseconds = 1_000,
        });
        cluster.List(leader, removed);
        await WaitForAsync(() => Connection(client, removed.Address), "the gateway never learned the node from the membership");
        cluster.List(leader);
        await WaitForAsync(() => Connection(client, removed.Address) is { IsMember: false } ? client : null, "the gateway never took the new membership in");

        // The only member fails every command, so its breaker opens: then no node is ready for an attempt, and the
        // commands must wait for the member rather than go to the node that left.
        cluster.LeaderFails = true;
        var receivedBefore = removed.CommandsReceived;
        var replies = new List<Reply>();
        for (var i = 0; i < 2; i++)
        {
            replies.Add(await client.ExecuteAsync(Get($"key-{i}"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience));
            replies.Add(await client.ExecuteAsync(Set($"key-{i}", session: 0), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience));
        }

        Assert.False(Connection(client, leader.Address)!.Healthy, "the member's breaker never opened: the test did not reach the case it is about");
        Assert.Equal(receivedBefore, removed.CommandsReceived);
        Assert.All(replies, reply => Assert.Equal(Reply.ResultOneofCase.Failure, reply.ResultCase));
    }

    private static NodeConnection? Connection(CacheCluster client, string address) =>
        client.Nodes.FirstOrDefault(node => node.Address == address);

    /// <summary>Reads distinct keys until the removed node answers one (reads go round the members).</summary>
    private static async Task ReadUntilServedByRemovedAsync(CacheCluster client)
    {
        var deadline = DateTime.UtcNow + Patience;
        for (var i = 0; ; i++)
        {
            var reply = await client.ExecuteAsync(Get($"key-{i}"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
            if (reply.ResultCase == Reply.ResultOneofCase.Bulk && reply.Bulk.ToStringUtf8().StartsWith("removed:", StringComparison.Ordinal))
            {
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, "no read was served by the removed node");
        }
    }

    private static Task<T> WaitForAsync<T>(Func<T?> found, string failure)
        where T : class => WaitForAsync(found, () => failure);

    private static Task<T> WaitForAsync<T>(Func<T?> found, Func<string> failure)
        where T : class => Eventually.ValueAsync(found, Patience, failure);

    /// <summary>
    /// Three scripted nodes: node 1 leads and reports the membership a test sets; nodes 2 (the seed) and 3 (the one
    /// removed) follow it. Each answers a read with its name and the key, unless <c>override</c> answers first.
    /// </summary>
    private sealed class ScriptedCluster : IAsyncDisposable
    {
        private Member[] _members = [];
        private bool _leaderFails;

        private ScriptedCluster()
        {
        }

        public ScriptedNode Leader { get; private set; } = null!;

        public ScriptedNode Seed { get; private set; } = null!;

        public ScriptedNode Removed { get; private set; } = null!;

        /// <summary>While set, the leader ends its command streams with an error at each command (status polls still answered).</summary>
        public bool LeaderFails
        {
            get => Volatile.Read(ref _leaderFails);
            set => Volatile.Write(ref _leaderFails, value);
        }

        public static async Task<ScriptedCluster> StartAsync(Func<Command, Reply?> first)
        {
            var cluster = new ScriptedCluster();
            try
            {
                var leader = Answer("leader");
                cluster.Leader = await ScriptedNode.StartAsync(command => cluster.LeaderFails ? null : leader(command), status: () => cluster.Status(1, "Leader"));
                cluster.Seed = await ScriptedNode.StartAsync(Answer("seed"), status: () => cluster.Status(2, "Follower"));
                var removed = Answer("removed");
                cluster.Removed = await ScriptedNode.StartAsync(command => first(command) ?? removed(command), status: () => cluster.Status(3, "Follower"));
                return cluster;
            }
            catch
            {
                await cluster.DisposeAsync();
                throw;
            }
        }

        /// <summary>The leader's membership from now on.</summary>
        public void List(params ScriptedNode[] members) =>
            Volatile.Write(ref _members, [.. members.Select(node => new Member { Id = IdOf(node), Address = node.Address, Voter = true })]);

        private ulong IdOf(ScriptedNode node) => ReferenceEquals(node, Leader) ? 1UL : ReferenceEquals(node, Seed) ? 2UL : 3UL;

        private NodeStatus Status(ulong id, string role) => new()
        {
            NodeId = id,
            ClusterId = "dcache",
            Role = role,
            Term = 1,
            LeaderId = 1,
            LeaderAddress = Leader.Address,
            // Followers report theirs too; the gateway takes the leader's in.
            Members = { Volatile.Read(ref _members) },
        };

        public async ValueTask DisposeAsync()
        {
            foreach (var node in new[] { Leader, Seed, Removed })
            {
                if (node is not null)
                {
                    await node.DisposeAsync();
                }
            }
        }
    }

    /// <summary>
    /// The node series an OpenTelemetry reader (as the Prometheus exporter's) collects from the cluster client's gauge:
    /// a series the gauge no longer reports must not be exported at its last value.
    /// </summary>
    private sealed class ExportedNodeSeries : IDisposable
    {
        private readonly Exporter _exporter = new();
        private readonly MeterProvider _provider;

        public ExportedNodeSeries()
        {
            _provider = Sdk.CreateMeterProviderBuilder()
                .AddMeter(CacheCluster.MeterName)
                .AddReader(new BaseExportingMetricReader(_exporter))
                .Build();
        }

        public IReadOnlySet<string> Collect()
        {
            lock (_exporter.Nodes)
            {
                _exporter.Nodes.Clear();
            }

            Assert.True(_provider.ForceFlush(30_000));
            lock (_exporter.Nodes)
            {
                return _exporter.Nodes.ToHashSet(StringComparer.Ordinal);
            }
        }

        public void Dispose() => _provider.Dispose();

        private sealed class Exporter : BaseExporter<Metric>
        {
            public List<string> Nodes { get; } = [];

            public override ExportResult Export(in Batch<Metric> batch)
            {
                lock (Nodes)
                {
                    foreach (var metric in batch)
                    {
                        if (metric.Name != "dcache.gateway.node.commands")
                        {
                            continue;
                        }

                        foreach (ref readonly var point in metric.GetMetricPoints())
                        {
                            foreach (var tag in point.Tags)
                            {
                                if (tag.Key == "node")
                                {
                                    Nodes.Add((string)tag.Value!);
                                }
                            }
                        }
                    }
                }

                return ExportResult.Success;
            }
        }
    }
}

/// <summary>Tests that read the cluster client's meter through an OpenTelemetry reader run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterMeterCollection
{
    public const string Name = "ClusterMeter";
}
