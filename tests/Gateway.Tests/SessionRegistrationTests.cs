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
}
