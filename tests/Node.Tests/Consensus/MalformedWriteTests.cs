using Dcache.Cache;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A write the leader cannot encode is refused as an invalid request. The caller holds the cluster's credentials, but
/// what it sends must not stop the loop: the node would exit, and the gateway's retry at the next leader would stop
/// that one too.
/// </summary>
public sealed class MalformedWriteTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_set_with_a_condition_the_protocol_does_not_define_is_refused_and_the_loop_goes_on(bool inTransaction)
    {
        // Founded on this build, so that the leader writes transactions (format 7) with its peers unheard.
        await using var node = PeerlessNode.Start(foundingEntryFormat: CacheCommand.FormatVersion);
        var driver = node.Driver;
        await node.LeadAsync(term: 2, voter: 2);
        var set = new Proto.Command
        {
            Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("v"), Condition = (Proto.SetCondition)3 },
        };
        var command = inTransaction
            ? new Proto.Command { Id = 1, Transaction = new Proto.TransactionRequest { Commands = { set } } }
            : set;
        command.Id = 1;

        var reply = driver.ExecuteAsync(command);
        Assert.True(await Task.WhenAny(reply, driver.Completion, Task.Delay(Patience)) == reply, $"no reply; the loop {(driver.Completion.IsCompleted ? "stopped" : "goes on")}");
        Assert.True(Proto.FailureKind.InvalidRequest == (await reply).Failure?.Kind, $"{await reply}");
        Assert.Equal(Role.Leader, await driver.RunOnLoopAsync(raft => raft.Role).WaitAsync(Patience));
    }
}
