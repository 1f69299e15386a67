using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>Log entry formats during a rolling upgrade: the leader writes the newest format every member reads.</summary>
public sealed class EntryFormatTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task WhileAMemberReadsOnlyFormat1TheLeaderWritesFormat1AndMovesToTheNewestOnceEveryMemberReadsIt()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 stands for a node of the previous build, which reads format 1 only.
        var leader = await StartWithNode3ReadingAsync(cluster, format: 1);

        // Format 1's meaning: a write for a session the cluster does not know starts it, whatever its sequence.
        var asFormat1 = await cluster.ExecuteAsync(leader, Commands.IncrBy("n", 1, clientId: 0xF0_0001, sequence: 5));
        Assert.True(asFormat1.Integer == 1, $"with a member that reads format 1 only: {asFormat1}");

        // Format 3's mark on a retry (the session must exist) is dropped too: format 1 starts the session.
        var marked = Commands.IncrBy("f", 1, clientId: 0xF0_0002, sequence: 1);
        marked.SessionMustExist = true;
        var markedAsFormat1 = await cluster.ExecuteAsync(leader, marked);
        Assert.True(markedAsFormat1.Integer == 1, $"a marked write with a member that reads format 1 only: {markedAsFormat1}");

        // A session registration needs format 3: the leader proposes nothing and says so with nil.
        var notRegistered = await cluster.ExecuteAsync(leader, RegisterSession(0xF0_0003));
        Assert.True(notRegistered.Nil, $"a registration with a member that reads format 1 only: {notRegistered}");

        // So do the write kinds of format 3: the leader refuses them with an error and proposes nothing.
        var getDel = await cluster.ExecuteAsync(leader, Commands.GetDel("first"));
        Assert.Equal("ERR GETDEL needs every node on a build that reads log format 3 (a rolling upgrade is in progress)", getDel.Error);
        Assert.Equal("1", (await cluster.ExecuteAsync(leader, Commands.Get("first"))).BulkText());

        // Node 3 upgraded: from now on the leader writes the newest format, where such a write is refused.
        cluster[3].Kill();
        cluster[3].Start();
        Reply asFormat2 = null!;
        ulong client = 0xF0_0100;
        await Eventually.WaitAsync(async () =>
        {
            // A new session each time: a write that still applied as format 1 has started its session.
            leader = await cluster.WaitForLeaderAsync(Patience);
            asFormat2 = await cluster.ExecuteAsync(leader, Commands.IncrBy("m", 1, clientId: ++client, sequence: 5));
            return asFormat2.Failure is { Kind: FailureKind.SessionExpired };
        }, Patience, "the leader to write the newest format once node 3 reads it");
        output.WriteLine($"after {client - 0xF0_0100} write(s): {asFormat2}");
        Assert.Equal("1", (await cluster.ExecuteAsync(leader, Commands.GetDel("first"))).BulkText());

        // Every member reads format 3 now: a session's first write that must find its session is refused too.
        var firstMarked = Commands.IncrBy("g", 1, clientId: 0xF0_0200, sequence: 1);
        firstMarked.SessionMustExist = true;
        var markedAsFormat3 = await cluster.ExecuteAsync(leader, firstMarked);
        Assert.True(markedAsFormat3.Failure is { Kind: FailureKind.SessionExpired }, $"a marked first write for an unknown session: {markedAsFormat3}");
        var unmarked = await cluster.ExecuteAsync(leader, Commands.IncrBy("g", 1, clientId: 0xF0_0200, sequence: 1));
        Assert.True(unmarked.Integer == 1, $"the same write unmarked starts its session: {unmarked}");

        // A registered session's marked first write applies, and once only.
        var registered = await cluster.ExecuteAsync(leader, RegisterSession(0xF0_0300));
        Assert.True(registered.Ok, $"a registration once every member reads format 3: {registered}");
        for (var attempt = 0; attempt < 2; attempt++)
        {
            var write = Commands.IncrBy("h", 1, clientId: 0xF0_0300, sequence: 1);
            write.SessionMustExist = true;
            var applied = await cluster.ExecuteAsync(leader, write);
            Assert.True(applied.Integer == 1, $"attempt {attempt + 1} of a registered session's first write: {applied}");
        }
    }

    [Fact]
    public async Task WhileAMemberReadsOnlyFormat3TheLeaderRefusesToMoveAMemberAndMovesItOnceEveryMemberReadsFormat4()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 stands for a node of the previous build: it reads format 3 and would skip the change it does not know.
        var leader = await StartWithNode3ReadingAsync(cluster, format: 3);
        var target = cluster.Nodes.Keys.First(id => id != leader);
        string[] update = ["member", "update", "--id", $"{target}", "--address", cluster[target].GrpcUrl, .. cluster.CtlOptions()];
        var refused = await Dcachectl.RunAsync(output, update);
        Dcachectl.AssertFails(refused, 1,
            "moving a member to a new address needs every member on a build that reads log format 4 (a rolling upgrade is in progress); not yet: node 3 (reads format 3)");
        Assert.DoesNotContain("Operator membership change proposed", cluster[leader].RecentOutput(400), StringComparison.Ordinal);

        // Node 3 upgraded: once the leader has heard it, the change goes through.
        cluster[3].Kill();
        cluster[3].Start();
        Dcachectl.Result accepted = null!;
        await Eventually.WaitAsync(async () =>
        {
            accepted = await Dcachectl.RunAsync(output, update);
            return accepted.Exit == 0;
        }, Patience, "the leader to move a member once node 3 reads format 4");
        Assert.Contains($"Moved node {target} to {cluster[target].GrpcUrl}", accepted.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WhileAMemberReadsOnlyFormat5TheLeaderRefusesSetrangeAndCopyAndAppliesThemOnceEveryMemberReadsFormat6()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 stands for a node of the previous build: it reads format 5 and would stop at a kind it does not know.
        var leader = await StartWithNode3ReadingAsync(cluster, format: 5);
        var lastBefore = (await cluster.StatusAsync(leader)).LastIndex;
        var setRange = await cluster.ExecuteAsync(leader, Commands.SetRange("first", 1, "23"));
        Assert.Equal("ERR SETRANGE needs every node on a build that reads log format 6 (a rolling upgrade is in progress)", setRange.Error);
        var copy = await cluster.ExecuteAsync(leader, Commands.Copy("first", "second"));
        Assert.Equal("ERR COPY needs every node on a build that reads log format 6 (a rolling upgrade is in progress)", copy.Error);
        Assert.Equal(lastBefore, (await cluster.StatusAsync(leader)).LastIndex);
        Assert.Equal("1", (await cluster.ExecuteAsync(leader, Commands.Get("first"))).BulkText());
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Get("second"))).Nil);

        // Node 3 upgraded: once the leader has heard it, both apply, on every node.
        cluster[3].Kill();
        cluster[3].Start();
        Reply applied = null!;
        await Eventually.WaitAsync(async () =>
        {
            leader = await cluster.WaitForLeaderAsync(Patience);
            applied = await cluster.ExecuteAsync(leader, Commands.SetRange("first", 1, "23"));
            return applied.ResultCase == Reply.ResultOneofCase.Integer;
        }, Patience, "the leader to accept SETRANGE once node 3 reads format 6");
        Assert.Equal(3, applied.Integer);
        Assert.Equal(1, (await cluster.ExecuteAsync(leader, Commands.Copy("first", "second"))).Integer);
        await Verify.CaughtUpAsync(cluster, Patience);
        foreach (var node in cluster.Nodes.Keys)
        {
            Assert.Equal("123", (await cluster.ExecuteAsync(node, Commands.Get("second", ReadConsistency.Local))).BulkText());
        }
    }

    [Fact]
    public async Task WhileAMemberReadsOnlyFormat6TheLeaderRefusesTransactionsAndAppliesThemOnceEveryMemberReadsFormat7()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 stands for a node of the previous build: it reads format 6 and would stop at a kind it does not know.
        var leader = await StartWithNode3ReadingAsync(cluster, format: 6);
        var lastBefore = (await cluster.StatusAsync(leader)).LastIndex;
        var refused = await cluster.ExecuteAsync(leader, Commands.Transaction(Commands.IncrBy("n", 1), Commands.Get("n")));
        Assert.Equal("ERR MULTI/EXEC needs every node on a build that reads log format 7 (a rolling upgrade is in progress)", refused.Error);
        Assert.Equal(lastBefore, (await cluster.StatusAsync(leader)).LastIndex);
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Get("n"))).Nil);

        // Node 3 upgraded: once the leader has heard it, the transaction applies, on every node.
        cluster[3].Kill();
        cluster[3].Start();
        Reply applied = null!;
        await Eventually.WaitAsync(async () =>
        {
            leader = await cluster.WaitForLeaderAsync(Patience);
            applied = await cluster.ExecuteAsync(leader, Commands.Transaction(Commands.IncrBy("n", 1), Commands.Get("n")));
            return applied.ResultCase == Reply.ResultOneofCase.Array;
        }, Patience, "the leader to accept MULTI/EXEC once node 3 reads format 7");
        Assert.Equal(1, applied.Array.Items[0].Integer);
        Assert.Equal("1", applied.Array.Items[1].BulkText());
        await Verify.CaughtUpAsync(cluster, Patience);
        foreach (var node in cluster.Nodes.Keys)
        {
            Assert.Equal("1", (await cluster.ExecuteAsync(node, Commands.Get("n", ReadConsistency.Local))).BulkText());
        }
    }

    [Fact]
    public async Task WhileAMemberReadsOnlyFormat7WatchCannotStartAndItStartsOnceEveryMemberReadsFormat8()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 stands for a node of the previous build: it reads format 7, which has no watched transaction.
        var leader = await StartWithNode3ReadingAsync(cluster, format: 7);
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("k", "v"))).Ok);

        // Every entry so far is format 7: the revisions have not started, and nothing may start them.
        Assert.True((await cluster.ExecuteAsync(leader, WatchRead("k"))).Nil);
        var lastBefore = (await cluster.StatusAsync(leader)).LastIndex;
        var refused = await cluster.ExecuteAsync(leader, WatchedTransaction());
        Assert.Equal("ERR WATCH needs every node on a build that reads log format 8 (a rolling upgrade is in progress)", refused.Error);
        Assert.Equal(lastBefore, (await cluster.StatusAsync(leader)).LastIndex);

        // Node 3 upgraded: once the leader has heard it, the revisions start, and a watched transaction applies on every node.
        cluster[3].Kill();
        cluster[3].Start();
        await Eventually.WaitAsync(async () =>
        {
            leader = await cluster.WaitForLeaderAsync(Patience);
            return (await cluster.ExecuteAsync(leader, WatchedTransaction())).ResultCase == Reply.ResultOneofCase.Array;
        }, Patience, "the leader to accept a watched transaction once node 3 reads format 8");
        var read = await cluster.ExecuteAsync(leader, WatchRead("k"));
        Assert.Equal(Reply.ResultOneofCase.Array, read.ResultCase);
        Assert.Equal(1, read.Array.Items[1].Integer);
        var watch = new WatchedKey { Key = Google.Protobuf.ByteString.CopyFromUtf8("k"), WatchedAt = (ulong)read.Array.Items[0].Integer, Live = true };
        var applied = await cluster.ExecuteAsync(leader, WatchedTransaction([watch], Commands.Set("x", "1")));
        Assert.Equal(Reply.ResultOneofCase.Array, applied.ResultCase);
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("k", "changed"))).Ok);
        Assert.True((await cluster.ExecuteAsync(leader, WatchedTransaction([watch], Commands.Set("x", "2")))).Nil);
        await Verify.CaughtUpAsync(cluster, Patience);
        foreach (var node in cluster.Nodes.Keys)
        {
            Assert.Equal("1", (await cluster.ExecuteAsync(node, Commands.Get("x", ReadConsistency.Local))).BulkText());
        }
    }

    private static Command WatchRead(params string[] keys)
    {
        var read = new WatchRequest();
        read.Keys.Add(keys.Select(Google.Protobuf.ByteString.CopyFromUtf8));
        return new Command { Watch = read };
    }

    private static Command WatchedTransaction(WatchedKey[]? watches = null, params Command[] commands)
    {
        var transaction = new TransactionRequest { Watched = true };
        transaction.Watches.Add(watches ?? []);
        transaction.Commands.Add(commands);
        return new Command { Transaction = transaction };
    }

    [Fact]
    public async Task ANewClusterOneOfWhoseFoundersHasNeverComeUpAcceptsCopyAndTransactionsAlsoAfterARestart()
    {
        await using var cluster = new LocalCluster(output);
        // Node 3 is down from the first start, so nodes 1 and 2 never hear which format it reads. Both are restarted
        // before any write: what they know of the founding must come from their data directories.
        cluster[1].Start();
        cluster[2].Start();
        await cluster.WaitForLeaderAsync(Patience);
        var leader = await RestartNodes1And2Async(cluster);
        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("first", "1"))).Ok);
        var copy = await cluster.ExecuteAsync(leader, Commands.Copy("first", "second"));
        Assert.True(copy.Integer == 1, $"COPY on a new cluster with a founder down: {copy}");
        var transaction = await cluster.ExecuteAsync(leader, Commands.Transaction(Commands.IncrBy("n", 1), Commands.Get("n")));
        Assert.True(transaction.ResultCase == Reply.ResultOneofCase.Array, $"MULTI/EXEC on a new cluster with a founder down: {transaction}");
        Assert.Equal(1, transaction.Array.Items[0].Integer);

        // Node 3 comes up at last and follows the log written meanwhile.
        cluster[3].Start();
        await Verify.CaughtUpAsync(cluster, Patience);
        Assert.Equal("1", (await cluster.ExecuteAsync(3, Commands.Get("second", ReadConsistency.Local))).BulkText());
        Assert.Equal("1", (await cluster.ExecuteAsync(3, Commands.Get("n", ReadConsistency.Local))).BulkText());
    }

    /// <summary>
    /// Founds the cluster on the previous build (every node telling its peers it reads only <paramref name="format"/>),
    /// upgrades nodes 1 and 2, makes sure one of them leads, and returns the leader once it has heard node 3 (node 3 has
    /// acknowledged an entry).
    /// </summary>
    /// <remarks>
    /// Founders run one build (operations.md): a cluster founded with only node 3 on the previous build would count
    /// node 3, until heard, as reading the newest format, and a node 3 slow to start would see the first write in it.
    /// </remarks>
    private async Task<ulong> StartWithNode3ReadingAsync(LocalCluster cluster, int format)
    {
        var previousBuild = $"--Dcache:Node:TestOnlyAdvertisedEntryFormat={format}";
        foreach (var node in cluster.Nodes.Values)
        {
            node.Start(previousBuild);
        }

        // Every node answers with the leader it follows: each has founded its data directory on the previous build.
        await cluster.WaitForLeaderAsync(Patience);
        var leader = await RestartNodes1And2Async(cluster);
        if (leader == 3)
        {
            var moved = await Dcachectl.RunAsync(output, ["leader", "transfer", "--to", "1", .. cluster.CtlOptions()]);
            Assert.True(moved.Exit == 0, moved.ToString());
            leader = await cluster.WaitForLeaderAsync(Patience);
        }

        Assert.True((await cluster.ExecuteAsync(leader, Commands.Set("first", "1"))).Ok);
        await Verify.CaughtUpAsync(cluster, Patience);
        return leader;
    }

    /// <summary>Kills nodes 1 and 2 and starts them again with no extra settings; returns the leader then.</summary>
    private static async Task<ulong> RestartNodes1And2Async(LocalCluster cluster)
    {
        cluster[1].Kill();
        cluster[2].Kill();
        cluster[1].Start();
        cluster[2].Start();
        return await cluster.WaitForLeaderAsync(Patience);
    }

    private static Command RegisterSession(ulong clientId) => new() { Id = clientId, ClientId = clientId, RegisterSession = new RegisterSessionRequest() };
}
