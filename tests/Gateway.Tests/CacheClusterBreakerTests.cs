using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using static Dcache.Gateway.Tests.CacheClusterBatchTests;

namespace Dcache.Gateway.Tests;

/// <summary>
/// A node's circuit breaker counts the attempts the node left unanswered for the whole attempt timeout (a stalled node:
/// up at the TCP level, answering nothing), so such a node stops receiving commands after a few; and a node whose
/// breaker opened is probed once its break is over, and gets commands again once it answers.
/// </summary>
public sealed class CacheClusterBreakerTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AStalledNodeOpensItsBreakerAfterAFewTimeoutsAndReadsGoElsewhere()
    {
        await using var stalled = await ScriptedNode.StartAsync(_ => ScriptedNode.Unanswered);
        await using var healthy = await ScriptedNode.StartAsync(Answer("healthy"));
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{stalled.Address},{healthy.Address}",
            AttemptTimeoutMilliseconds = 300,
            DeadlineMilliseconds = 10_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 60_000,
        });

        await ReadUntilOpenAsync(cluster, "healthy", maxReads: 20);
        var whenOpened = stalled.CommandsReceived;
        Assert.InRange(whenOpened, 3, 6);

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal($"healthy:after-{i}", (await cluster.ExecuteAsync(Get($"after-{i}"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).Bulk?.ToStringUtf8());
        }

        Assert.Equal(whenOpened, stalled.CommandsReceived);
    }

    [Fact]
    public async Task AStalledNodeOpensItsBreakerUnderALoneClientsOneReadAtATime()
    {
        // Three timeouts of 1.1 s in a row span more than 2 s: a breaker looking back 2 s never held three at once.
        await using var stalled = await ScriptedNode.StartAsync(_ => ScriptedNode.Unanswered);
        await using var healthy = await ScriptedNode.StartAsync(Answer("healthy"));
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{stalled.Address},{healthy.Address}",
            AttemptTimeoutMilliseconds = 1100,
            DeadlineMilliseconds = 10_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 60_000,
        });

        await ReadUntilOpenAsync(cluster, "healthy", maxReads: 12);
        Assert.InRange(stalled.CommandsReceived, 3, 6);
    }

    [Fact]
    public async Task ANodeWhoseBreakerOpenedIsProbedOnceItsBreakIsOverAndGetsReadsAgain()
    {
        // Stream failures open the breaker here, as they always did: what is tested is the way back.
        var broken = 1;
        await using var flaky = await ScriptedNode.StartAsync(command => Volatile.Read(ref broken) == 1 ? null : Answer("flaky")(command));
        await using var healthy = await ScriptedNode.StartAsync(Answer("healthy"));
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{flaky.Address},{healthy.Address}",
            AttemptTimeoutMilliseconds = 1000,
            DeadlineMilliseconds = 10_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 500,
        });

        await ReadUntilOpenAsync(cluster, "healthy", maxReads: 40);
        Volatile.Write(ref broken, 0);

        // Reads go round the members: once the break is over, one of them is the probe, and the node is back.
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        for (var i = 0; ; i++)
        {
            var reply = (await cluster.ExecuteAsync(Get($"back-{i}"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).Bulk?.ToStringUtf8();
            if (reply == $"flaky:back-{i}" && cluster.View.HealthyNodes == 2)
            {
                break;
            }

            Assert.True(DateTime.UtcNow < until, $"the node never got a read again once it answered ({i + 1} reads, healthy nodes: {cluster.View.HealthyNodes})");
            await Task.Delay(20);
        }
    }

    [Fact]
    public async Task AProbeItsCallerGaveUpOnKeepsTheBreakerOpen()
    {
        // The stalled node leads (it answers writes) and reads go to the leader: so the read sent once the break is
        // over is the probe. Its reads break the stream until the breaker is open, and then go unanswered: no attempt
        // times out here, so only the caller's giving up ends the probe. (With the breaker opened by 300 ms timeouts, a
        // test thread descheduled for longer than that between seeing the probe arrive and cancelling it let the probe
        // time out instead, and the read was then answered by the follower.)
        var breaking = 1;
        await using var stalled = await ScriptedNode.StartAsync(command => command.OpCase != Command.OpOneofCase.Get ? Answer("leader")(command)
            : Volatile.Read(ref breaking) == 1 ? null : ScriptedNode.Unanswered);
        await using var follower = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Set
            ? new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 1, LeaderAddress = stalled.Address, Message = "not the leader" } }
            : Answer("follower")(command));
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{stalled.Address},{follower.Address}",
            ReadRouting = ReadRouting.Leader,
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 120_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 500,
        });
        Assert.True((await cluster.ExecuteAsync(Set("k", session: 1), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).Ok);
        Assert.Equal(stalled.Address, cluster.View.LeaderAddress);
        await ReadUntilOpenAsync(cluster, "follower", maxReads: 20);
        Volatile.Write(ref breaking, 0);

        var until = DateTime.UtcNow + Patience;
        while (true)
        {
            var readsBefore = stalled.Received.SelectMany(batch => batch).Count(command => command.OpCase == Command.OpOneofCase.Get);
            using var leaving = new CancellationTokenSource();
            var call = cluster.ExecuteAsync(Get("probe"), ReadMode.Linearizable, leaving.Token);
            while (!call.IsCompleted && stalled.Received.SelectMany(batch => batch).Count(command => command.OpCase == Command.OpOneofCase.Get) == readsBefore)
            {
                Assert.True(DateTime.UtcNow < until, "no read was sent to the node once its break was over");
                await Task.Delay(5);
            }

            if (call.IsCompleted)
            {
                continue; // answered by the follower: the break was not over yet
            }

            // The probe is out: its client leaves before the node answers.
            await leaving.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.WaitAsync(Patience));
            break;
        }

        Assert.Equal(1, cluster.View.HealthyNodes);
    }

    [Fact]
    public async Task AWriteWhoseAttemptsTimedOutIsStillAnUnknownOutcomeAndOnceTheBreakerIsOpenAWriteIsNotSentThere()
    {
        // The stalled node alone: with a follower beside it, each write also went to the follower (the open breaker
        // keeps the leader out of the round), and an attempt there that the deadline cut short, or that a loaded machine
        // let time out, may have delivered the write, which is then rightly an unknown outcome (seen for the second
        // write in 3 of 16 runs of the class under CPU load). Three timeouts of a second open the breaker within the
        // first write's deadline, with 3 s to spare.
        await using var stalled = await ScriptedNode.StartAsync(_ => ScriptedNode.Unanswered);
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = stalled.Address,
            AttemptTimeoutMilliseconds = 1_000,
            DeadlineMilliseconds = 6_000,
            BreakAfterFailures = 3,
            BreakMilliseconds = 60_000,
        });

        // Sent to the node, which may have applied it: unknown, whatever the breaker makes of the timeouts.
        var first = await cluster.ExecuteAsync(Set("a", session: 1), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
        Assert.True(first.Failure?.Kind == FailureKind.OutcomeUnknown, first.ToString());
        Assert.Equal(0, cluster.View.HealthyNodes);

        // The open breaker keeps the next write from the stalled node: it surely never applied, and says so.
        var second = await cluster.ExecuteAsync(Set("b", session: 2), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
        Assert.True(second.Failure?.Kind == FailureKind.Unavailable, second.ToString());
        Assert.DoesNotContain(stalled.Received.SelectMany(batch => batch), command => command.ClientId == 2);
    }

    /// <summary>Reads one key at a time (each answered by <paramref name="answeredBy"/>) until the gateway counts one node fewer healthy.</summary>
    private static async Task ReadUntilOpenAsync(CacheCluster cluster, string answeredBy, int maxReads)
    {
        for (var i = 0; cluster.View.HealthyNodes == cluster.View.Nodes; i++)
        {
            Assert.True(i < maxReads, $"no breaker opened after {maxReads} reads");
            var reply = await cluster.ExecuteAsync(Get($"k-{i}"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
            Assert.Equal($"{answeredBy}:k-{i}", reply.Bulk?.ToStringUtf8());
        }
    }
}
