using Dcache.Gateway.Commands;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>What a client sees when the cluster cannot run a command, and what happens to the write session.</summary>
public sealed class ClusterFailureTests
{
    private static Reply FailureOf(FailureKind kind, string message = "no leader") => new() { Failure = new Failure { Kind = kind, Message = message } };

    [Theory]
    [InlineData(FailureKind.NotLeader)]
    [InlineData(FailureKind.Unavailable)]
    public async Task NotAppliedFailuresAskTheClientToTryAgainAndKeepTheSession(FailureKind kind)
    {
        var server = new TestServer();
        await using var client = server.Connect();
        await client.CommandAsync("SET", "a", "1");
        server.Cluster.Script = _ => FailureOf(kind);
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "no leader", (await client.CommandAsync("SET", "a", "2")).ToString());
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "no leader", (await client.CommandAsync("GET", "a")).ToString());
        server.Cluster.Script = null;
        Assert.Equal("+OK", (await client.CommandAsync("SET", "a", "3")).ToString());

        // The refused write was certainly not applied, so its session carries the next write.
        var writes = server.Cluster.Executed.Where(e => e.Command.ClientId != 0).ToList();
        Assert.Single(writes.Select(e => e.Command.ClientId).Distinct());
        Assert.Equal([1UL, 2UL, 3UL], writes.Select(e => e.Command.Sequence));
    }

    [Fact]
    public async Task UnknownOutcomeSaysSoAndRetiresTheSession()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        server.Cluster.Script = _ => FailureOf(FailureKind.OutcomeUnknown, "leadership lost after proposing");
        Assert.Equal(
            "-UNKNOWN outcome unknown: the command may or may not have been applied: leadership lost after proposing",
            (await client.CommandAsync("INCR", "n")).ToString());
        server.Cluster.Script = null;
        Assert.Equal(":1", (await client.CommandAsync("INCR", "n")).ToString());
        var writes = server.Cluster.Executed.Where(e => e.Command.ClientId != 0).ToList();
        Assert.NotEqual(writes[0].Command.ClientId, writes[1].Command.ClientId);
    }

    [Fact]
    public async Task AWriteTheClusterClientMovedToANewSessionRetiresItsOldOne()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        ulong expiredSession = 0;
        server.Cluster.Script = command =>
        {
            // What the cluster client does when the cluster says the session expired and the write never applied.
            expiredSession = command.ClientId;
            command.ClientId = expiredSession + 1_000_000;
            command.Sequence = 1;
            return Replies.Ok;
        };
        Assert.Equal("+OK", (await client.CommandAsync("SET", "a", "1")).ToString());
        server.Cluster.Script = null;
        Assert.Equal("+OK", (await client.CommandAsync("SET", "a", "2")).ToString());

        var next = server.Cluster.Executed.Last(e => e.Command.ClientId != 0).Command;
        Assert.NotEqual(0UL, expiredSession);
        Assert.NotEqual(expiredSession, next.ClientId);
        Assert.Equal(1UL, next.Sequence);
    }

    [Fact]
    public async Task AThrowingClusterClientIsAnUnknownOutcomeForWritesAndRetryableForReads()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        server.Cluster.Script = _ => throw new TimeoutException("slow");
        Assert.Equal("-" + ClusterErrors.OutcomeUnknownPrefix + "the cluster did not answer in time", (await client.CommandAsync("SET", "a", "1")).ToString());
        Assert.Equal("-" + ClusterErrors.TryAgainPrefix + "the cluster did not answer in time", (await client.CommandAsync("GET", "a")).ToString());
        server.Cluster.Script = _ => throw new InvalidOperationException("bug");
        Assert.Equal("-" + ClusterErrors.OutcomeUnknownPrefix + "the cluster client failed (InvalidOperationException)", (await client.CommandAsync("DEL", "a")).ToString());
        server.Cluster.Script = null;
        Assert.Equal("+PONG", (await client.CommandAsync("PING")).ToString());
        Assert.Contains(server.Log.Entries, e => e.Id.Id == 5005);
    }

    [Fact]
    public async Task ApplicationErrorsPassThroughAsTheyAreWorded()
    {
        var server = new TestServer();
        await using var client = server.Connect();
        server.Cluster.Script = _ => new Reply { Error = "OOM command not allowed when used memory > 'maxmemory'." };
        Assert.Equal("-OOM command not allowed when used memory > 'maxmemory'.", (await client.CommandAsync("SET", "a", "1")).ToString());
        server.Cluster.Script = _ => FailureOf(FailureKind.InvalidRequest, "ERR invalid expire time in 'set' command");
        Assert.Equal("-ERR invalid expire time in 'set' command", (await client.CommandAsync("SET", "a", "1")).ToString());
        server.Cluster.Script = _ => new Reply();
        Assert.StartsWith("-UNKNOWN ", (await client.CommandAsync("SET", "a", "1")).ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task EveryFailureKindMapsToADocumentedPrefix()
    {
        var documented = new[] { "TRYAGAIN ", "UNKNOWN ", "ERR " };
        foreach (var kind in Enum.GetValues<FailureKind>())
        {
            foreach (var isWrite in new[] { true, false })
            {
                var text = ClusterErrors.Describe(new Failure { Kind = kind }, isWrite);
                Assert.Contains(documented, prefix => text.StartsWith(prefix, StringComparison.Ordinal));
            }
        }

        var protocol = await File.ReadAllTextAsync(Path.Combine(RepositoryRoot(), "docs", "protocol.md"));
        Assert.Contains(ClusterErrors.TryAgainPrefix.TrimEnd(), protocol, StringComparison.Ordinal);
        Assert.Contains(ClusterErrors.OutcomeUnknownPrefix.TrimEnd(), protocol, StringComparison.Ordinal);
        Assert.Contains(ClusterErrors.InvalidRequestPrefix.TrimEnd(), protocol, StringComparison.Ordinal);
    }

    private static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Dcache.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new DirectoryNotFoundException("Dcache.sln not found above the test binaries");
    }
}
