using Dcache.Gateway.Cluster;
using Dcache.Gateway.Commands;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>A write session is registered on the cluster before its first write, so every write can say its session must exist.</summary>
public sealed class SessionRegistrationTests
{
    [Fact]
    public async Task ANewSessionIsRegisteredOnceAndAllItsWritesSayTheSessionMustExist()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        Assert.Equal(":1", (await client.CommandAsync("INCR", "n")).ToString());
        Assert.Equal(":2", (await client.CommandAsync("INCR", "n")).ToString());

        var writes = server.Cluster.Executed.Select(e => e.Command).ToList();
        Assert.Equal([writes[0].ClientId], server.Cluster.Registrations);
        Assert.Equal([(1UL, true), (2UL, true)], writes.Select(w => (w.Sequence, w.SessionMustExist)));
    }

    [Fact]
    public async Task WhenTheClusterCannotRegisterYetTheFirstWriteStartsTheSessionAndTheRestMustFindIt()
    {
        // A member's build predates registrations (a rolling upgrade): the leader answers nil and proposes nothing.
        var server = new TestServer();
        server.Cluster.RegistrationScript = _ => Replies.Nil;
        await using var client = server.Connect();
        Assert.Equal(":1", (await client.CommandAsync("INCR", "n")).ToString());
        Assert.Equal(":2", (await client.CommandAsync("INCR", "n")).ToString());

        Assert.Single(server.Cluster.Registrations);
        var writes = server.Cluster.Executed.Select(e => e.Command).ToList();
        Assert.Equal([(1UL, false), (2UL, true)], writes.Select(w => (w.Sequence, w.SessionMustExist)));
    }

    [Fact]
    public async Task ANodeThatDoesNotKnowRegistrationsCountsAsAClusterThatCannotRegister()
    {
        var server = new TestServer();
        server.Cluster.RegistrationScript = _ => new Reply { Failure = new Failure { Kind = FailureKind.InvalidRequest, Message = "command without an operation" } };
        await using var client = server.Connect();
        Assert.Equal("+OK", (await client.CommandAsync("SET", "k", "v")).ToString());
        Assert.False(Assert.Single(server.Cluster.Executed).Command.SessionMustExist);
    }

    [Fact]
    public async Task AFailedRegistrationLeavesTheWriteUnsentAndTheNextWriteRegistersAgain()
    {
        var server = new TestServer();
        server.Cluster.RegistrationScript = _ => new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "no reply within the deadline" } };
        await using var client = server.Connect();
        var refused = (await client.CommandAsync("INCR", "n")).ToString();
        Assert.StartsWith("-" + ClusterErrors.TryAgainPrefix, refused, StringComparison.Ordinal);
        Assert.Contains("not applied: the cluster did not confirm a new write session in time", refused, StringComparison.Ordinal);
        Assert.Empty(server.Cluster.Executed);

        server.Cluster.RegistrationScript = null;
        Assert.Equal(":1", (await client.CommandAsync("INCR", "n")).ToString());
        Assert.Equal(2, server.Cluster.Registrations.Count);
        Assert.True(Assert.Single(server.Cluster.Executed).Command.SessionMustExist);
    }

    [Fact]
    public async Task ARegistrationNoNodeCouldServeAnswersTheWriteWithTheClustersOwnNotAppliedReason()
    {
        var server = new TestServer();
        server.Cluster.RegistrationScript = _ => new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = "not applied: no leader elected" } };
        await using var client = server.Connect();
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "not applied: no leader elected", (await client.CommandAsync("INCR", "n")).ToString());
        Assert.Empty(server.Cluster.Executed);
    }
}

/// <summary>A new session's registration and its first write share the client command's one deadline.</summary>
public sealed class SessionRegistrationDeadlineTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // Dcache:Gateway:LocalReads, whose cluster wraps every call
    public async Task ARegistrationThatTookMostOfTheDeadlineLeavesTheFirstWriteOnlyWhatIsLeft(bool localReads)
    {
        // The registration is answered after 2 s of a 4 s deadline, and the write not within any deadline: the client
        // must have its answer (unknown outcome: the write was sent) at the deadline, not 4 s after the registration.
        await using var node = await ScriptedNode.StartAsync(
            command => new Reply { Ok = true },
            delay: command => command.OpCase switch
            {
                Command.OpOneofCase.RegisterSession => TimeSpan.FromSeconds(2),
                Command.OpOneofCase.Set => TimeSpan.FromSeconds(20),
                _ => TimeSpan.Zero,
            });
        await using var cluster = CacheClusterBatchTests.Connect(new ClusterOptions { Nodes = node.Address, AttemptTimeoutMilliseconds = 30_000, DeadlineMilliseconds = 4_000 });
        await using var gateway = await KestrelGateway.StartAsync(over: localReads ? new LocalReadsCluster(cluster) : cluster);
        using var client = await GatewayConnection.OpenAsync(gateway.Port, CancellationToken.None);

        var clock = System.Diagnostics.Stopwatch.StartNew();
        var reply = (await client.CommandAsync(Patience, "SET", "k", "v")).ToString();
        var took = clock.Elapsed;

        Assert.StartsWith("-UNKNOWN", reply, StringComparison.Ordinal);
        Assert.Contains(node.Received.SelectMany(batch => batch), command => command.OpCase == Command.OpOneofCase.Set);
        // 4 s and the time to answer; with a deadline of its own the write ran until 6 s (8.6 s with a 3 s registration).
        Assert.True(took < TimeSpan.FromSeconds(5.2), $"answered after {took.TotalSeconds:F1} s");
    }
}
