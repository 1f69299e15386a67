using System.Diagnostics;
using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>Membership and leadership changes through the real dcachectl against real node processes.</summary>
public sealed class MembershipTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CatchUp = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task EachMemberCommandWorksThroughDcachectlAndRefusesMistakesWithAClearMessage()
    {
        await using var cluster = new LocalCluster(output);
        await cluster.StartAsync();
        var leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        var follower = cluster.Nodes.Keys.First(id => id != leader);
        var all = cluster.CtlOptions();

        // list, asked of a follower only: dcachectl follows its hint to the leader.
        var list = await Ctl(["member", "list"], cluster.CtlOptions([follower]));
        Assert.Equal(0, list.Exit);
        Assert.Matches($@"(?m)^\s+{leader}\s+leader\s+{cluster[leader].GrpcUrl}", list.Output);
        Assert.Matches($@"(?m)^\s+{follower}\s+voter\s+{cluster[follower].GrpcUrl}", list.Output);

        // Wrong secret, unreachable endpoint: say so, exit 1.
        var wrongSecret = await Ctl(["member", "list"], cluster.CtlOptions(secret: "not-the-secret"));
        Dcachectl.AssertFails(wrongSecret, 1, "wrong or missing cluster secret");
        var closedPort = FreePorts.Allocate(1)[0];
        var unreachable = await Dcachectl.RunAsync(output, "member", "list", "--endpoints", $"http://127.0.0.1:{closedPort}", "--cluster-id", cluster.ClusterId, "--secret", LocalCluster.Secret);
        Dcachectl.AssertFails(unreachable, 1, $"http://127.0.0.1:{closedPort}: cannot reach the node (Connection refused");

        // Unknown ids, a double add, malformed options.
        var removeUnknown = await Ctl(["member", "remove", "--id", "9"], all);
        Dcachectl.AssertFails(removeUnknown, 1, "node 9 is not a member");
        var promoteUnknown = await Ctl(["member", "promote", "--id", "9"], all);
        Dcachectl.AssertFails(promoteUnknown, 1, "node 9 is not a member");
        var doubleAdd = await Ctl(["member", "add", "--id", $"{follower}", "--address", cluster[follower].GrpcUrl], all);
        Dcachectl.AssertFails(doubleAdd, 1, $"node {follower} is already a voter");
        var badId = await Ctl(["member", "add", "--id", "four", "--address", "http://127.0.0.1:1"], all);
        Dcachectl.AssertFails(badId, 2, "--id must be a node id");
        var badAddress = await Ctl(["member", "add", "--id", "4", "--address", "ftp://127.0.0.1:1"], all);
        Dcachectl.AssertFails(badAddress, 1, "is not an http:// URL");

        // Add node 4 as a learner before it runs: promoting it is refused until it has caught up.
        var node4 = cluster.AddJoiningNode(4);
        var add = await Ctl(["member", "add", "--id", "4", "--address", node4.GrpcUrl], all);
        Assert.Equal(0, add.Exit);
        Assert.Contains($"Added node 4 ({node4.GrpcUrl}) as a learner", add.Output, StringComparison.Ordinal);
        Assert.Matches($@"(?m)^\s+4\s+learner\s+{node4.GrpcUrl}", add.Output);
        var sameAddress = await Ctl(["member", "add", "--id", "5", "--address", node4.GrpcUrl], all);
        Dcachectl.AssertFails(sameAddress, 1, $"address {node4.GrpcUrl} already belongs to node 4");
        var early = await Ctl(["member", "promote", "--id", "4"], all);
        Dcachectl.AssertFails(early, 1, "node 4 has not caught up");

        node4.Start();
        await WaitCaughtUpAsync(cluster, 4);
        var promote = await Ctl(["member", "promote", "--id", "4"], all);
        Assert.Equal(0, promote.Exit);
        Assert.Contains("Promoted node 4 to voter", promote.Output, StringComparison.Ordinal);
        var status = await Ctl(["status"], cluster.CtlOptions());
        Assert.Equal(0, status.Exit);
        Assert.Equal(4, CountLines(status.Output, @"\s1,2,3,4\s+-\s*$"));

        // Restarted with no InitialCluster at all, node 4 finds its peers from its own log.
        await node4.StopAsync(TimeSpan.FromSeconds(10));
        cluster.SetReachable(4, "");
        leader = await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(ReplyOk, (await cluster.ExecuteAsync(leader, Commands.Set("after-restart", "yes"))).ResultCase);
        node4.Start();
        await WaitCaughtUpAsync(cluster, 4);
        Assert.Equal("yes", (await cluster.ExecuteAsync(4, Commands.Get("after-restart", ReadConsistency.Local))).BulkText());

        // Leadership to a named voter, then to whichever is most up to date; an unknown target is refused.
        var toFour = await Ctl(["leader", "transfer", "--to", "4"], all);
        Assert.Equal(0, toFour.Exit);
        Assert.Contains("to node 4.", toFour.Output, StringComparison.Ordinal);
        Assert.Equal(4UL, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)));
        var away = await Ctl(["leader", "transfer"], all);
        Assert.Equal(0, away.Exit);
        Assert.Contains("Leadership moved from node 4 to node", away.Output, StringComparison.Ordinal);
        Assert.NotEqual(4UL, await cluster.WaitForLeaderAsync(TimeSpan.FromSeconds(10)));
        var toUnknown = await Ctl(["leader", "transfer", "--to", "9"], all);
        Dcachectl.AssertFails(toUnknown, 1, "node 9 is not a member");

        var remove = await Ctl(["member", "remove", "--id", "4"], all);
        Assert.Equal(0, remove.Exit);
        Assert.Contains("Removed node 4", remove.Output, StringComparison.Ordinal);
        await node4.StopAsync(TimeSpan.FromSeconds(10));
        var final = await Ctl(["status"], cluster.CtlOptions([1, 2, 3]));
        Assert.Equal(0, final.Exit);
        Assert.Equal(3, CountLines(final.Output, @"\s1,2,3\s+-\s*$"));
    }

    /// <summary>Runs the real dcachectl with <paramref name="command"/> and the cluster options.</summary>
    private Task<Dcachectl.Result> Ctl(string[] command, string[] options) => Dcachectl.RunAsync(output, [.. command, .. options]);

    private const Reply.ResultOneofCase ReplyOk = Reply.ResultOneofCase.Ok;

    private static int CountLines(string text, string pattern) =>
        text.Split('\n').Count(line => System.Text.RegularExpressions.Regex.IsMatch(line.TrimEnd('\r'), pattern));

    /// <summary>Waits until <paramref name="id"/> has applied everything the leader has committed.</summary>
    private static Task WaitCaughtUpAsync(LocalCluster cluster, ulong id) =>
        Eventually.WaitAsync(async () =>
        {
            var leader = cluster.Nodes.Values.Where(n => n.IsRunning && n.Id != id).Select(n => n.Id).First();
            var leaderStatus = await cluster.StatusAsync(leader);
            var target = leaderStatus.LeaderId == 0 ? leaderStatus : await cluster.StatusAsync(leaderStatus.LeaderId);
            var mine = await cluster.StatusAsync(id);
            return mine.AppliedIndex >= target.CommitIndex && mine.LeaderId == target.LeaderId && target.LeaderId != 0;
        }, CatchUp, $"node {id} to catch up with the leader");
}
