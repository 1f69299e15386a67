using System.Collections.Concurrent;
using System.Diagnostics;
using Dcache.Gateway.Tests.Support;
using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Chaos;

/// <summary>
/// Links stall (a network that holds every packet and closes nothing) for longer than the HTTP/2 keepalive of the
/// processes that use them: only their own timeouts can tell them anything is wrong. The partitions of the chaos
/// schedules close the connections they cut when they heal, so they never show this.
/// </summary>
[Trait("Category", "Chaos")]
public sealed class StalledLinkTests(ITestOutputHelper output)
{
    public enum Stalled
    {
        /// <summary>The gateway's link to the leader, both directions: the nodes see nothing wrong.</summary>
        GatewayToLeader,

        /// <summary>Every link between the leader and the other nodes, both directions: the gateway still reaches it.</summary>
        LeaderToPeers,
    }

    private const int Writers = 12;
    private const int Readers = 4;

    // Above the gateway's deadline (4 s): every command must end at the gateway, never at this client's patience.
    private static readonly TimeSpan ClientTimeout = TimeSpan.FromSeconds(10);

    // A process gives up on a silent connection to a node through its keepalive (GrpcChannels: a ping after 5 s of
    // silence, given up 5 s later, each up to a second late); the rest covers a busy machine.
    private static readonly TimeSpan KeepAliveNoticed = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(Stalled.GatewayToLeader)]
    [InlineData(Stalled.LeaderToPeers)]
    public async Task LinksThatStallPastTheKeepaliveAreGivenUpAndReopenedAndNothingIsLost(Stalled stalled)
    {
        await using var cluster = new LocalCluster(output);
        await using var mesh = new ProxyMesh(cluster);
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(3)); // bound, whatever happens
        var workload = new List<Task>();
        try
        {
            await cluster.StartAsync();
            await cluster.StartGatewayAsync();
            var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
            Assert.Equal("OK", (await ChaosClient.UntilAnsweredAsync(cluster.GatewayPort, TimeSpan.FromSeconds(30), "SET", "stable", "present")).Reply.Text);

            var clock = Stopwatch.StartNew();
            var acknowledged = new ConcurrentDictionary<string, string>();
            var acknowledgedAt = new ConcurrentQueue<TimeSpan>();
            var errors = new ConcurrentQueue<string>();
            var incrAcknowledged = new int[Writers];
            var incrUnsure = new int[Writers];
            var reads = new ConcurrentQueue<(TimeSpan At, TimeSpan Took, string? Error)>();
            for (var w = 0; w < Writers; w++)
            {
                var writer = w;
                workload.Add(Task.Run(async () =>
                {
                    GatewayConnection? connection = null;
                    try
                    {
                        for (var n = 0; n < 100_000 && !stop.IsCancellationRequested; n++)
                        {
                            connection ??= await GatewayConnection.OpenAsync(cluster.GatewayPort, stop.Token);
                            var key = $"stall{writer}:{n}";
                            var set = await TryAsync(connection, "SET", key, $"v{n}");
                            if (set.Reply is { IsError: false })
                            {
                                acknowledged[key] = $"v{n}";
                                acknowledgedAt.Enqueue(clock.Elapsed);
                            }

                            var incr = set.Error is null ? await TryAsync(connection, "INCR", $"counter:{writer}") : set;
                            if (incr.Reply is { IsError: false })
                            {
                                Interlocked.Increment(ref incrAcknowledged[writer]);
                            }
                            else if (set.Error is null && (incr.Error is not null || incr.Reply!.Text!.StartsWith("UNKNOWN ", StringComparison.Ordinal)))
                            {
                                // Sent, outcome not known: it may have applied.
                                Interlocked.Increment(ref incrUnsure[writer]);
                            }

                            foreach (var outcome in new[] { set, incr }.Distinct())
                            {
                                if ((outcome.Error ?? (outcome.Reply!.IsError ? outcome.Reply.Text : null)) is { } error)
                                {
                                    errors.Enqueue(error);
                                }
                            }

                            if (set.Error is not null || incr.Error is not null)
                            {
                                connection.Dispose();
                                connection = null;
                            }
                        }
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested)
                    {
                    }
                    finally
                    {
                        connection?.Dispose();
                    }
                }));
            }

            for (var r = 0; r < Readers; r++)
            {
                workload.Add(Task.Run(async () =>
                {
                    GatewayConnection? connection = null;
                    try
                    {
                        for (var n = 0; n < 100_000 && !stop.IsCancellationRequested; n++)
                        {
                            connection ??= await GatewayConnection.OpenAsync(cluster.GatewayPort, stop.Token);
                            var started = clock.Elapsed;
                            var get = await TryAsync(connection, "GET", "stable");
                            var error = get.Error ?? (get.Reply!.IsError ? get.Reply.Text : get.Reply.Text == "present" ? null : $"read '{get.Reply.Text}'");
                            reads.Enqueue((started, clock.Elapsed - started, error));
                            if (get.Error is not null)
                            {
                                connection.Dispose();
                                connection = null;
                            }
                        }
                    }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested)
                    {
                    }
                    finally
                    {
                        connection?.Dispose();
                    }
                }));
            }

            await Eventually.WaitAsync(() => acknowledged.Count >= 300, TimeSpan.FromSeconds(60), "300 acknowledged writes before the stall");
            var links = stalled == Stalled.GatewayToLeader ? ProxyMesh.GatewayLinks(leader) : ProxyMesh.LinksBetween(leader, cluster.Nodes.Keys);
            var connectionsBefore = links.ToDictionary(link => link, mesh.Connections);
            mesh.Stall(links);
            var stalledAt = clock.Elapsed;
            output.WriteLine($"stalled {string.Join(", ", links.Select(l => $"{Name(l.From)}->{Name(l.To)}"))}, leader {leader}");

            // The stall lasts until the process cut off (the gateway; the leader) has given up on each of its stalled
            // connections by itself and opened another (which the stall holds too). A link nothing is sent on needs no
            // new connection (a follower has nothing to send to a leader it no longer hears), so only these are awaited.
            var cutOff = stalled == Stalled.GatewayToLeader ? ProxyMesh.Gateway : leader;
            var awaited = links.Where(link => link.From == cutOff).ToList();
            try
            {
                var noticed = await Eventually.WaitAsync(() => awaited.All(link => mesh.Connections(link) > connectionsBefore[link]), KeepAliveNoticed, $"a new connection from {Name(cutOff)} on each stalled link");
                output.WriteLine($"{Name(cutOff)} had opened a new connection on each stalled link {noticed.TotalSeconds:F1} s into the stall");
            }
            finally
            {
                output.WriteLine("connections opened over each stalled link, before and now: " + string.Join(", ", links.Select(l => $"{Name(l.From)}->{Name(l.To)} {connectionsBefore[l]}/{mesh.Connections(l)}")));
            }

            mesh.Resume(links);
            var resumedAt = clock.Elapsed;

            await Eventually.WaitAsync(() => acknowledgedAt.Any(t => t > resumedAt), TimeSpan.FromSeconds(30), "a write acknowledged after the stall ended");
            var atResume = acknowledged.Count;
            await Eventually.WaitAsync(() => acknowledged.Count >= atResume + 300, TimeSpan.FromSeconds(60), "300 more acknowledged writes after the stall");
            await stop.CancelAsync();
            await Task.WhenAll(workload);

            var firstAfter = acknowledgedAt.Where(t => t > resumedAt).Min() - resumedAt;
            var duringStall = acknowledgedAt.Where(t => t > stalledAt && t < resumedAt).Order().ToList();
            output.WriteLine($"writes acknowledged during the stall: {duringStall.Count}{(duringStall.Count > 0 ? $", the first {(duringStall[0] - stalledAt).TotalMilliseconds:F0} ms into it" : "")}; the first after it {firstAfter.TotalMilliseconds:F0} ms after it ended");
            var stallReads = reads.Where(r => r.At >= stalledAt && r.At < resumedAt).ToList();
            output.WriteLine($"reads during the stall: {stallReads.Count}, failed {stallReads.Count(r => r.Error is not null)}, slowest {stallReads.Select(r => r.Took.TotalMilliseconds).DefaultIfEmpty().Max():F0} ms");
            var allErrors = errors.Concat(reads.Select(r => r.Error).OfType<string>()).ToList();
            foreach (var error in allErrors.Distinct().Take(8))
            {
                output.WriteLine($"  error seen: {error}");
            }

            if (stalled == Stalled.GatewayToLeader)
            {
                // Reads go round the members, and a follower confirms them with the leader over links that flow.
                Assert.True(stallReads.All(r => r.Error is null), "a read failed while only the gateway's link to the leader stalled");
            }
            else
            {
                // The others elect a leader of their own without anyone closing a connection (check quorum, pre-vote).
                Assert.True(duringStall.Count > 0, "no write was acknowledged while the leader's links to its peers stalled");
            }

            var undocumented = allErrors.Where(e => !ChaosClient.IsDocumentedClusterError(e)).Distinct().ToList();
            Assert.True(undocumented.Count == 0, "errors outside the documented ones (or no answer within the client's timeout): " + string.Join(" | ", undocumented.Take(5)));
            output.WriteLine($"{acknowledged.Count} writes acknowledged, {errors.Count} documented errors seen");

            // No acknowledged write lost; no INCR applied twice (and none acknowledged but missing).
            using var check = await GatewayConnection.OpenAsync(cluster.GatewayPort, CancellationToken.None);
            // In MGETs of a few hundred keys: one GET each took tens of seconds for the thousands of writes of a run.
            foreach (var batch in acknowledged.ToList().Chunk(500))
            {
                var read = await check.CommandAsync(ClientTimeout, ["MGET", .. batch.Select(write => write.Key)]);
                Assert.True(read.Items?.Count == batch.Length, $"MGET of {batch.Length} acknowledged keys answered {read}");
                foreach (var ((key, value), item) in batch.Zip(read.Items!))
                {
                    Assert.True(item.Text == value, $"acknowledged write {key} lost (read '{item}')");
                }
            }

            for (var w = 0; w < Writers; w++)
            {
                var counter = long.Parse((await check.CommandAsync(ClientTimeout, "GET", $"counter:{w}")).Text ?? "0", System.Globalization.CultureInfo.InvariantCulture);
                Assert.InRange(counter, incrAcknowledged[w], incrAcknowledged[w] + incrUnsure[w]);
            }

            // Every node, the one whose links stalled too, ends with the same state.
            await Verify.SameDigestAsync(cluster, TimeSpan.FromSeconds(60));
        }
        finally
        {
            await stop.CancelAsync();
            await Task.WhenAll(workload).WaitAsync(TimeSpan.FromSeconds(30)).ContinueWith(_ => { }, TaskScheduler.Default);
        }
    }

    private static string Name(ulong id) => id == ProxyMesh.Gateway ? "gateway" : $"node {id}";

    /// <summary>The gateway's reply, or the reason there was none (the connection is unusable then).</summary>
    private static async Task<(RespValue? Reply, string? Error)> TryAsync(GatewayConnection connection, params string[] arguments)
    {
        try
        {
            return (await connection.CommandAsync(ClientTimeout, arguments), null);
        }
        catch (Exception ex) when (ex is TimeoutException or IOException or System.Net.Sockets.SocketException)
        {
            return (null, $"{ex.GetType().Name}: {ex.Message}");
        }
    }
}
