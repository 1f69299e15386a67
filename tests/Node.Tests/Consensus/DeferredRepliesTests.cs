using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

public sealed class DeferredRepliesTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task The_replies_of_writes_applied_together_reach_their_stream_once_the_last_of_them_is_applied()
    {
        // Handed over one by one as each entry applied, a command stream's writer woke at the first reply and sent the
        // rest a few per message.
        var node = PeerlessNode.Start();
        try
        {
            var (disk, driver) = (node.Disk, node.Driver);
            var noOp = await node.LeadAsync(term: 2, voter: 2);
            var stream = new ApplyRecordingSink(driver.Cache);
            const int writes = 20;
            for (var id = 1UL; id <= writes; id++)
            {
                driver.Execute(new Proto.Command { Id = id, Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8($"k{id}"), Value = ByteString.CopyFromUtf8("v") } }, stream);
            }

            var last = noOp + writes;
            await DriverWaits.UntilAsync(driver, _ => disk.LastIndex >= last, $"the writes were not written up to {last}");
            Assert.Empty(stream.AppliedIndexAtEachReply);

            // Node 2 holds them all: one round commits and applies the no-op and the twenty writes.
            Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = last }, 0));
            await DriverWaits.UntilAsync(driver, _ => stream.Count == writes, "not every write was answered");

            Assert.All(stream.AppliedIndexAtEachReply, applied => Assert.Equal(last, applied));
            Assert.Equal(Enumerable.Range(1, writes).Select(id => (ulong)id), stream.ReplyIds);
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    /// <summary>A command stream that notes, as each reply reaches it (on the loop), how far the cache has applied.</summary>
    private sealed class ApplyRecordingSink(CacheStateMachine cache) : IReplySink
    {
        private readonly object _gate = new();
        private readonly List<ulong> _applied = [];
        private readonly List<ulong> _ids = [];

        public int Count
        {
            get
            {
                lock (_gate)
                {
                    return _ids.Count;
                }
            }
        }

        public IReadOnlyList<ulong> AppliedIndexAtEachReply
        {
            get
            {
                lock (_gate)
                {
                    return [.. _applied];
                }
            }
        }

        public IReadOnlyList<ulong> ReplyIds
        {
            get
            {
                lock (_gate)
                {
                    return [.. _ids];
                }
            }
        }

        public void Complete(Proto.Reply reply)
        {
            lock (_gate)
            {
                _applied.Add(cache.AppliedIndex);
                _ids.Add(reply.Ok ? reply.Id : 0); // 0: the write failed
            }
        }
    }
}
