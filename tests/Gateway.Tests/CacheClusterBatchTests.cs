using Dcache.Gateway.Cluster;
using Dcache.Gateway.Tests.Support;
using Dcache.Protocol.Cache;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Dcache.Gateway.Tests;

/// <summary>
/// The cluster client runs a pipeline wave as one batch: one message per node and one resilience pipeline run, while
/// every command still gets its own reply, its own retries and its own ending.
/// </summary>
public sealed class CacheClusterBatchTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task AWaveReachesTheNodeAsOneMessageAndEachCommandGetsItsOwnReply()
    {
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address, StreamsPerNode = 2 }));

        var calls = Enumerable.Range(0, 16)
            .Select(i => i % 2 == 0 ? new ClusterCall(Get($"key-{i}"), ReadMode.Linearizable) : new ClusterCall(Set($"key-{i}", session: (ulong)i), ReadMode.Linearizable))
            .ToArray();
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        for (var i = 0; i < calls.Length; i++)
        {
            if (i % 2 == 0)
            {
                Assert.Equal($"node:key-{i}", replies[i].Bulk.ToStringUtf8());
            }
            else
            {
                Assert.True(replies[i].Ok, $"SET key-{i}: {replies[i]}");
            }
        }

        // Sent one by one, the commands would have been spread over both streams (two messages at least).
        var message = Assert.Single(node.Received);
        Assert.Equal(16, message.Length);
        Assert.Equal(16, message.Select(command => command.Id).Distinct().Count());
    }

    [Fact]
    public async Task AReadTellsTheNodeHowLongItsAttemptWaitsAndAWriteDoesNot()
    {
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        // The attempt far shorter than the deadline (the read is told the attempt's time, not the deadline's), and long
        // enough never to run out: with 700 ms, a first call on a cold process under load could time out, and the read
        // was then sent twice.
        await using var cluster = Connect(new ClusterOptions { Nodes = node.Address, AttemptTimeoutMilliseconds = 10_000, DeadlineMilliseconds = 30_000 });

        ClusterCall[] calls = [new(Get("a"), ReadMode.Linearizable), new(Set("b", session: 1), ReadMode.Linearizable)];
        cluster.ExecuteAll(calls, CancellationToken.None);
        await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.InRange(Assert.Single(sent, command => command.Get is not null).TimeoutMs, 1u, 10_000u);
        Assert.Equal(0u, Assert.Single(sent, command => command.Set is not null).TimeoutMs);
    }

    [Fact]
    public async Task AWriteRefusedAsNotLeaderGoesToTheNamedLeaderWhileTheReadsOfItsWaveAreAnsweredWhereTheyWere()
    {
        await using var leader = await ScriptedNode.StartAsync(Answer("leader"));
        await using var follower = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Set
            ? new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 2, LeaderAddress = leader.Address, Message = "not the leader" } }
            : Answer("follower")(command));
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = follower.Address }));

        ClusterCall[] calls = [new(Get("a"), ReadMode.Linearizable), new(Set("b", session: 7), ReadMode.Linearizable), new(Get("c"), ReadMode.Linearizable)];
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        Assert.Equal("follower:a", replies[0].Bulk.ToStringUtf8());
        Assert.True(replies[1].Ok, replies[1].ToString());
        Assert.Equal("follower:c", replies[2].Bulk.ToStringUtf8());
        Assert.Equal(3, follower.CommandsReceived);
        var retried = Assert.Single(Assert.Single(leader.Received));
        Assert.Equal(Command.OpOneofCase.Set, retried.OpCase);
        Assert.Equal(2UL, cluster.View.LeaderId);
        Assert.Equal(leader.Address, cluster.View.LeaderAddress);
    }

    [Fact]
    public async Task WhenTheStreamBreaksMidBatchTheRepliesReceivedStandAndAnUnsessionedWriteIsAnUnknownOutcome()
    {
        // Every stream breaks at the write: the read before it is answered, the write and the read after it never are.
        await using var node = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Set ? null : Answer("node")(command));
        // Only the stream's breaking and the deadline end attempts here: with attempts of 200 ms, one that ran out under
        // load before the read's reply was taken in sent the answered read again. The deadline leaves room for the write
        // to be resent on a new stream (600 ms did not, now and then, run alone).
        await using var cluster = Connect(new ClusterOptions { Nodes = node.Address, DeadlineMilliseconds = 4_000, AttemptTimeoutMilliseconds = 60_000 });

        ClusterCall[] calls = [new(Get("a"), ReadMode.Linearizable), new(Set("b", session: 0), ReadMode.Linearizable), new(Get("c"), ReadMode.Linearizable)];
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        Assert.Equal("node:a", replies[0].Bulk.ToStringUtf8());
        Assert.Equal(FailureKind.OutcomeUnknown, replies[1].Failure?.Kind);
        Assert.Equal(FailureKind.Unavailable, replies[2].Failure?.Kind);
        Assert.Contains("not applied", replies[2].Failure.Message, StringComparison.Ordinal);

        // The answered read was sent once; the others were retried until the deadline.
        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.Single(sent, command => command.Get?.Key.ToStringUtf8() == "a");
        Assert.True(sent.Count(command => command.Set is not null) >= 2, $"the write was sent {sent.Count(command => command.Set is not null)} time(s)");
    }

    [Fact]
    public async Task AReadThatTimedOutAtTheLeaderIsAskedOfAnotherMemberNext()
    {
        // The leader answers writes but never reads, as a leader cut off from the gateway looks to a read sent after
        // the cut: only the attempt timeout tells, and one timeout does not open the node's breaker.
        await using var leader = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Get ? ScriptedNode.Unanswered : Answer("leader")(command));
        await using var follower = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Set
            ? new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 1, LeaderAddress = leader.Address, Message = "not the leader" } }
            : Answer("follower")(command));
        // The attempt at the leader must time out, and the retry at the follower must not: with 300 ms, a follower slow to
        // answer under load (its stream perhaps not yet open) could time out too, and the read went back to the leader.
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{leader.Address},{follower.Address}",
            ReadRouting = ReadRouting.Leader,
            AttemptTimeoutMilliseconds = 2_000,
            DeadlineMilliseconds = 20_000,
        });
        Assert.True((await cluster.ExecuteAsync(Set("k", session: 1), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).Ok);
        Assert.Equal(leader.Address, cluster.View.LeaderAddress);

        var reply = await cluster.ExecuteAsync(Get("k"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);

        Assert.Equal("follower:k", reply.Bulk?.ToStringUtf8());
        Assert.Single(leader.Received.SelectMany(batch => batch), command => command.OpCase == Command.OpOneofCase.Get);
        // The retry is a read of its own at the other member (its own read index), never a local one.
        var retried = Assert.Single(follower.Received.SelectMany(batch => batch), command => command.OpCase == Command.OpOneofCase.Get);
        Assert.Equal(ReadConsistency.Linearizable, retried.Consistency);
    }

    [Fact]
    public async Task AWaveTooLargeForOneMessageIsCutToFitAndACommandNoMessageCouldCarryIsRefusedUnsent()
    {
        const int maxMessageBytes = 256 * 1024;
        var maxItemBytes = Dcache.Protocol.MessageLimits.MaxItemBytes(maxMessageBytes);
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address, MaxMessageBytes = maxMessageBytes }));

        var value = new string('v', 50_000);
        var calls = Enumerable.Range(0, 10).Select(i => new ClusterCall(Set($"key-{i}", session: (ulong)i + 1, value), ReadMode.Linearizable)).ToList();
        calls.Insert(5, new ClusterCall(Set("huge", session: 100, new string('h', maxItemBytes)), ReadMode.Linearizable));
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        Assert.StartsWith("ERR command too large", replies[5].Error, StringComparison.Ordinal);
        Assert.All(replies.Where((_, i) => i != 5), reply => Assert.True(reply.Ok, reply.ToString()));
        Assert.True(node.Received.Count >= 3, $"{node.Received.Count} message(s) carried 500 KB");
        Assert.All(node.Received, message => Assert.True(message.Sum(Dcache.Protocol.MessageLimits.FramedSize) <= maxItemBytes));
        Assert.Equal(10, node.CommandsReceived);
    }

    [Fact]
    public async Task AWriteRefusedAsTooLargeDoesNotMakeTheGatewayTakeANodeForTheLeader()
    {
        // No leader known (the scripted node reports no status): a write goes to whichever node is next. Its refusal was
        // made on the way to that node and then taken for that node's answer to a write, so for a sign that it leads.
        const int maxMessageBytes = 256 * 1024;
        var maxItemBytes = Dcache.Protocol.MessageLimits.MaxItemBytes(maxMessageBytes);
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address, MaxMessageBytes = maxMessageBytes }));

        var call = new ClusterCall(Set("huge", session: 1, new string('h', maxItemBytes)), ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.StartsWith("ERR command too large", reply.Error, StringComparison.Ordinal);
        Assert.Null(cluster.View.LeaderAddress);
        Assert.Equal(0, node.CommandsReceived);
    }

    [Fact]
    public async Task AWriteNearTheSizeLimitIsNeverRefusedAsTooLargeAfterAnAttemptThatMayHaveApplied()
    {
        // Each attempt gives the command a new id, and a retry after an attempt that may have applied sets
        // session_must_exist: measured as sent, a write that just fitted was refused on its retry, and the client read
        // "not applied" for a write that may have applied. Every size around the limit: either no attempt is ever sent
        // (refused at once, surely not applied) or the write is not refused as too large.
        var maxMessageBytes = Dcache.Protocol.MessageLimits.MinMaxMessageBytes;
        var maxItemBytes = Dcache.Protocol.MessageLimits.MaxItemBytes(maxMessageBytes);
        var firstSeen = new System.Collections.Concurrent.ConcurrentDictionary<string, bool>();
        await using var node = await ScriptedNode.StartAsync(command => firstSeen.TryAdd(command.Set.Key.ToStringUtf8(), true)
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost after proposing" } }
            : new Reply { Ok = true });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address, MaxMessageBytes = maxMessageBytes }));

        var tried = 0;
        for (var length = maxItemBytes - 60; length <= maxItemBytes; length++)
        {
            var key = $"k{length}";
            var write = Set(key, session: 7, new string('v', length));
            var size = Dcache.Protocol.MessageLimits.FramedSize(write);
            if (size < maxItemBytes - 20 || size > maxItemBytes)
            {
                continue;
            }

            tried++;
            var call = new ClusterCall(write, ReadMode.Linearizable);
            cluster.ExecuteAll([call], CancellationToken.None);
            var reply = await call.Reply.WaitAsync(Patience);
            var sent = node.Received.SelectMany(batch => batch).Count(command => command.Set.Key.ToStringUtf8() == key);
            if (sent == 0)
            {
                Assert.StartsWith("ERR command too large", reply.Error, StringComparison.Ordinal);
            }
            else
            {
                Assert.True(reply.Ok, $"a write of {size} bytes (limit {maxItemBytes}) sent {sent} time(s) was answered {reply}");
            }
        }

        Assert.True(tried >= 10, $"only {tried} sizes near the limit");
    }

    [Fact]
    public async Task ANotLeaderReplyNamingALeaderWithoutAnAddressIsRetriedWithBackoffNotAtOnce()
    {
        await using var node = await ScriptedNode.StartAsync(_ =>
            new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 2, LeaderAddress = "", Message = "not the leader" } });
        await using var cluster = Connect(new ClusterOptions { Nodes = node.Address, AttemptTimeoutMilliseconds = 3_000, DeadlineMilliseconds = 3_000 });

        var call = new ClusterCall(Set("k", session: 9), ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        // Not applied, or unknown should the deadline fall while an attempt is out.
        Assert.Contains(reply.Failure?.Kind, new FailureKind?[] { FailureKind.Unavailable, FailureKind.OutcomeUnknown });
        // With backoff from 20 ms (doubling, jittered, at most 500 ms) three seconds hold about 10 attempts; retried at
        // once, the same node got one attempt after another for the whole deadline.
        Assert.True(node.CommandsReceived is >= 1 and <= 25, $"{node.CommandsReceived} attempts in 3 s");
    }

    [Fact]
    public async Task AStatusPollFollowsTheLeaderOfTheNewestTermNotANodeStillNamingAnOldOne()
    {
        // The seed is a node that no longer hears of newer leaders (removed but running): it keeps naming the leader of
        // term 4, long gone. The leader of term 5 must stay the gateway's leader whichever of the two answers last.
        await using var leader = await ScriptedNode.StartAsync(Answer("leader"), status: () => new NodeStatus { NodeId = 1, Role = "Leader", Term = 5, LeaderId = 1 });
        await using var stale = await ScriptedNode.StartAsync(Answer("stale"),
            status: () => new NodeStatus { NodeId = 2, Role = "Follower", Term = 4, LeaderId = 9, LeaderAddress = "http://127.0.0.1:9" });
        await using var cluster = Connect(new ClusterOptions { Nodes = $"{stale.Address},{leader.Address}", StatusPollMilliseconds = 20 });

        await Eventually.WaitAsync(() => cluster.View.LeaderAddress == leader.Address, Patience, "the gateway never followed the leader");
        // Sampled while 15 more rounds of polls run (each takes both answers in).
        var rounds = leader.StatusRequests;
        var seen = new HashSet<string?>();
        var deadline = System.Diagnostics.Stopwatch.StartNew();
        while (leader.StatusRequests < rounds + 15 && deadline.Elapsed < Patience)
        {
            seen.Add(cluster.View.LeaderAddress);
            await Task.Delay(1);
        }

        Assert.True(leader.StatusRequests >= rounds + 15, "the polls stopped");
        Assert.Equal([leader.Address], seen);
    }

    [Fact]
    public async Task AWriteWhoseSessionExpiredAndThatSurelyNeverAppliedIsSentAgainAtOnceUnderANewSession()
    {
        await using var node = await ScriptedNode.StartAsync(command => command.Sequence > 1
            ? new Reply { Failure = new Failure { Kind = FailureKind.SessionExpired, Message = "session expired" } }
            : new Reply { Ok = true });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));

        var write = Set("k", session: 42);
        write.Sequence = 5;
        write.SessionMustExist = true;
        var call = new ClusterCall(write, ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.True(reply.Ok, reply.ToString());
        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.Equal(2, sent.Length);
        Assert.Equal((42UL, 5UL), (sent[0].ClientId, sent[0].Sequence));
        Assert.NotEqual(42UL, sent[1].ClientId);
        Assert.NotEqual(0UL, sent[1].ClientId);
        Assert.Equal(1UL, sent[1].Sequence);
        Assert.False(sent[1].SessionMustExist); // the new session is started by this very write
        Assert.Equal(sent[1].ClientId, write.ClientId); // the caller sees which session the write ended under
    }

    [Fact]
    public async Task AWriteThatMustFindItsSessionSaysSoOnEveryAttempt()
    {
        // A registered session's first write: the node plays a cluster whose sessions all expired between the
        // attempts (a new leader whose clock runs ahead). Unmarked, the retry would start the session again and
        // apply the write a second time.
        var attempts = 0;
        await using var node = await ScriptedNode.StartAsync(command => Interlocked.Increment(ref attempts) == 1
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost after proposing" } }
            : command.SessionMustExist
                ? new Reply { Failure = new Failure { Kind = FailureKind.SessionExpired, Message = "session expired" } }
                : new Reply { Integer = 2 });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));

        var write = Set("k", session: 42);
        write.SessionMustExist = true;
        var call = new ClusterCall(write, ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.Equal(FailureKind.OutcomeUnknown, reply.Failure?.Kind);
        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.Equal(2, sent.Length);
        Assert.All(sent, command => Assert.Equal((42UL, 1UL, true), (command.ClientId, command.Sequence, command.SessionMustExist)));
    }

    [Fact]
    public async Task AWriteMovedToANewSessionMustFindThatSessionOnceAnAttemptMayHaveStartedIt()
    {
        // Attempt 1: the old session expired (surely not applied), so the write moves to a new, unregistered session
        // at sequence 1. Attempt 2 may have applied and started it. Should the new session expire before attempt 3,
        // an unmarked attempt 3 would start it again and apply the write twice.
        var attempts = 0;
        await using var node = await ScriptedNode.StartAsync(command => Interlocked.Increment(ref attempts) switch
        {
            1 => new Reply { Failure = new Failure { Kind = FailureKind.SessionExpired, Message = "session expired" } },
            2 => new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost after proposing" } },
            _ => command.SessionMustExist
                ? new Reply { Failure = new Failure { Kind = FailureKind.SessionExpired, Message = "session expired" } }
                : new Reply { Integer = 2 },
        });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));

        var write = Set("k", session: 42);
        write.Sequence = 5;
        write.SessionMustExist = true;
        var call = new ClusterCall(write, ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.Equal(FailureKind.OutcomeUnknown, reply.Failure?.Kind);
        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.Equal(3, sent.Length);
        Assert.Equal([true, false, true], sent.Select(command => command.SessionMustExist));
        Assert.Equal(sent[1].ClientId, sent[2].ClientId);
    }

    [Fact]
    public async Task AWriteWhoseSessionExpiredAfterAnAttemptThatMayHaveAppliedIsAnUnknownOutcomeNotAResend()
    {
        var attempts = 0;
        await using var node = await ScriptedNode.StartAsync(_ => Interlocked.Increment(ref attempts) == 1
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost after proposing" } }
            : new Reply { Failure = new Failure { Kind = FailureKind.SessionExpired, Message = "session expired" } });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));

        var write = Set("k", session: 42);
        write.Sequence = 5;
        var call = new ClusterCall(write, ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.Equal(FailureKind.OutcomeUnknown, reply.Failure?.Kind);
        Assert.Contains("session expired", reply.Failure!.Message, StringComparison.Ordinal);
        var sent = node.Received.SelectMany(batch => batch).ToArray();
        Assert.Equal(2, sent.Length);
        Assert.All(sent, command => Assert.Equal((42UL, 5UL), (command.ClientId, command.Sequence)));
    }

    [Fact]
    public async Task ACallerThatGoesAwayCancelsItsCalls()
    {
        await using var node = await ScriptedNode.StartAsync(_ => new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = "no leader" } });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));
        using var leaving = new CancellationTokenSource();

        ClusterCall[] calls = [new(Get("a"), ReadMode.Linearizable), new(Set("b", session: 3), ReadMode.Linearizable)];
        cluster.ExecuteAll(calls, leaving.Token);
        await WaitUntilAsync(() => node.CommandsReceived >= 2);
        await leaving.CancelAsync();

        foreach (var call in calls)
        {
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call.Reply.WaitAsync(Patience));
        }
    }

    [Fact]
    public async Task AWriteRefusedOnItsRetryAfterAnAttemptThatMayHaveAppliedIsAnUnknownOutcomeNotTheRefusal()
    {
        // The first attempt may have applied; the retry's refusal says nothing about that attempt, so the client must not
        // read it as the write's fate.
        var attempts = 0;
        await using var node = await ScriptedNode.StartAsync(_ => Interlocked.Increment(ref attempts) == 1
            ? new Reply { Failure = new Failure { Kind = FailureKind.OutcomeUnknown, Message = "leadership lost after proposing" } }
            : new Reply { Failure = new Failure { Kind = FailureKind.InvalidRequest, Message = "ERR the retry was refused" } });
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address }));

        var call = new ClusterCall(Set("k", session: 42), ReadMode.Linearizable);
        cluster.ExecuteAll([call], CancellationToken.None);
        var reply = await call.Reply.WaitAsync(Patience);

        Assert.Equal(FailureKind.OutcomeUnknown, reply.Failure?.Kind);
        Assert.Contains("ERR the retry was refused", reply.Failure!.Message, StringComparison.Ordinal);
        Assert.Equal(2, node.CommandsReceived);
    }

    [Fact]
    public async Task AReadIsToldNoMoreTimeThanItsDeadlineLeavesWhenTheAttemptTimeoutIsLonger()
    {
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        await using var cluster = Connect(new ClusterOptions { Nodes = node.Address, AttemptTimeoutMilliseconds = 60_000, DeadlineMilliseconds = 20_000 });

        var reply = await cluster.ExecuteAsync(Get("a"), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);

        Assert.Equal("node:a", reply.Bulk.ToStringUtf8());
        // The node drops a read still unanswered when told: past the deadline nobody waits for it.
        Assert.InRange(Assert.Single(node.Received.SelectMany(batch => batch)).TimeoutMs, 1u, 20_000u);
    }

    [Fact]
    public async Task AWaveLongerThanMaxBatchIsSentInMessagesOfAtMostMaxBatchCommands()
    {
        await using var node = await ScriptedNode.StartAsync(Answer("node"));
        await using var cluster = Connect(Unhurried(new ClusterOptions { Nodes = node.Address, MaxBatch = 4, StreamsPerNode = 1 }));

        var calls = Enumerable.Range(0, 10).Select(i => new ClusterCall(Get($"key-{i}"), ReadMode.Linearizable)).ToArray();
        cluster.ExecuteAll(calls, CancellationToken.None);
        var replies = await Task.WhenAll(calls.Select(call => call.Reply)).WaitAsync(Patience);

        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"node:key-{i}"), replies.Select(reply => reply.Bulk.ToStringUtf8()));
        Assert.Equal(10, node.CommandsReceived);
        Assert.All(node.Received, message => Assert.InRange(message.Length, 1, 4));
    }

    [Fact]
    public async Task AWriteRefusedBecauseTheNodesBacklogIsFullIsNotAppliedAndNeverSent()
    {
        // The read holds the node's whole backlog (one command) for longer than the write's deadline: every attempt at the
        // write is refused before it is sent, so the client may safely try it again.
        await using var node = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Get ? ScriptedNode.Unanswered : new Reply { Ok = true });
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = node.Address,
            MaxCommandsPerNode = 1,
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 3_000,
            BreakAfterFailures = 1_000, // the breaker looks back (1,000 + 1) x 60 s, within Polly's day
        });
        // The stream is open before the read, so that the read reaches the node well within its deadline.
        Assert.True((await cluster.ExecuteAsync(Set("warm", session: 4), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience)).Ok);

        // The write's deadline began before the read's: it is over before the read lets go of the backlog.
        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        var read = new ClusterCall(Get("held"), ReadMode.Linearizable);
        cluster.ExecuteAll([read], CancellationToken.None);
        await Eventually.WaitAsync(() => node.CommandsReceived == 2, Patience, "the read to reach the node");
        var write = new ClusterCall(Set("k", session: 5), ReadMode.Linearizable) { DeadlineStartedAt = began };
        cluster.ExecuteAll([write], CancellationToken.None);
        var reply = await write.Reply.WaitAsync(Patience);

        Assert.Equal(FailureKind.Unavailable, reply.Failure?.Kind);
        Assert.Contains("not applied", reply.Failure!.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(node.Received.SelectMany(batch => batch), command => command.Set?.Key.ToStringUtf8() == "k");
        await read.Reply.WaitAsync(Patience);
    }

    [Fact]
    public async Task ANodeTakesCommandsUpToItsBacklogExactlyAndOneBatchOfAnySizeWhenItHoldsNothing()
    {
        // MaxCommandsPerNode bounds what a node holds, queued or unanswered: a batch that brings it to the bound exactly
        // is sent; and one batch always goes to a node holding nothing, however large (else it could never be sent).
        await using var node = await ScriptedNode.StartAsync(command => command.OpCase == Command.OpOneofCase.Get ? ScriptedNode.Unanswered : new Reply { Ok = true });
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = node.Address,
            MaxCommandsPerNode = 2,
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 30_000,
            BreakAfterFailures = 1_000, // the breaker looks back (1,000 + 1) x 60 s, within Polly's day
        });
        var lone = Enumerable.Range(0, 3).Select(i => new ClusterCall(Set($"lone-{i}", session: (ulong)(10 + i)), ReadMode.Linearizable)).ToList();
        cluster.ExecuteAll(lone, CancellationToken.None);
        var loneReplies = await Task.WhenAll(lone.Select(call => call.Reply)).WaitAsync(Patience);
        Assert.All(loneReplies, reply => Assert.True(reply.Ok, reply.ToString()));
        Assert.Contains(node.Received, batch => batch.Length == 3);

        // One command held (a read the node never answers), then a write that brings the node to two: sent.
        var read = new ClusterCall(Get("held"), ReadMode.Linearizable);
        cluster.ExecuteAll([read], CancellationToken.None);
        await Eventually.WaitAsync(() => node.CommandsReceived == 4, Patience, "the read to reach the node");
        var write = await cluster.ExecuteAsync(Set("at-the-bound", session: 20), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
        Assert.True(write.Ok, write.ToString());
    }

    [Fact]
    public async Task AWriteWhoseLeaderLostItsStreamIsTriedAtAnotherMemberRatherThanOnlyAtThatNodeAgain()
    {
        // The gateway learns node A leads (B names it), then A breaks its stream at every write, as a node that crashed
        // mid-batch. A's breaker never opens here: only forgetting A as the leader sends the write anywhere else.
        var aBroken = 0;
        var bWrites = 0;
        ScriptedNode? a = null;
        await using var nodeA = a = await ScriptedNode.StartAsync(_ => Volatile.Read(ref aBroken) == 1 ? null : new Reply { Ok = true });
        await using var nodeB = await ScriptedNode.StartAsync(command => Interlocked.Increment(ref bWrites) == 1
            ? new Reply { Failure = new Failure { Kind = FailureKind.NotLeader, LeaderId = 1, LeaderAddress = a.Address, Message = "not the leader" } }
            : new Reply { Ok = true });
        await using var cluster = Connect(new ClusterOptions
        {
            Nodes = $"{nodeA.Address},{nodeB.Address}",
            AttemptTimeoutMilliseconds = 60_000,
            DeadlineMilliseconds = 5_000,
            BreakAfterFailures = 1_000, // the breaker looks back (1,000 + 1) x 60 s, within Polly's day
        });
        var first = await cluster.ExecuteAsync(Set("k1", session: 1), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);
        Assert.True(first.Ok, first.ToString());
        Assert.Equal(nodeA.Address, cluster.View.LeaderAddress);

        Volatile.Write(ref aBroken, 1);
        var reply = await cluster.ExecuteAsync(Set("k2", session: 2), ReadMode.Linearizable, CancellationToken.None).WaitAsync(Patience);

        Assert.True(reply.Ok, reply.ToString());
        Assert.Contains(nodeB.Received.SelectMany(batch => batch), command => command.Set?.Key.ToStringUtf8() == "k2");
    }

    /// <summary>
    /// For a test whose nodes answer every attempt: attempts and deadline far longer than a loaded machine stalls, so
    /// that only the nodes' answers (or the caller) end them. With the defaults (1.5 s and 4 s), a cold first call under
    /// CPU load ran out and was sent again, and a test counting what the node received found one too many.
    /// </summary>
    private static ClusterOptions Unhurried(ClusterOptions options)
    {
        options.AttemptTimeoutMilliseconds = 60_000;
        options.DeadlineMilliseconds = 120_000;
        return options;
    }

    internal static CacheCluster Connect(ClusterOptions options)
    {
        options.ClusterSecret = "secret";
        return new CacheCluster(Options.Create(options), NullLogger<CacheCluster>.Instance);
    }

    internal static Func<Command, Reply?> Answer(string name) => command => command.OpCase switch
    {
        Command.OpOneofCase.Get => new Reply { Bulk = ByteString.CopyFromUtf8($"{name}:{command.Get.Key.ToStringUtf8()}") },
        Command.OpOneofCase.Set => new Reply { Ok = true },
        _ => new Reply { Error = "ERR unexpected command" },
    };

    internal static Command Get(string key) => new() { Get = new GetRequest { Key = ByteString.CopyFromUtf8(key) } };

    internal static Command Set(string key, ulong session, string value = "v") => new()
    {
        ClientId = session,
        Sequence = session == 0 ? 0 : 1UL,
        Set = new SetRequest { Key = ByteString.CopyFromUtf8(key), Value = ByteString.CopyFromUtf8(value) },
    };

    private static Task WaitUntilAsync(Func<bool> condition) => Eventually.WaitAsync(condition, Patience, "the node to receive both commands");
}
