using Dcache.Cache;
using Dcache.Node.Tests.Cache;
using Dcache.Raft;
using Google.Protobuf;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// The format a leader writes when it has not heard from a member since it started: the newest the log already holds,
/// which a member must read to follow the log at all (not format 1, which refused MULTI/EXEC and WATCH whenever a member
/// was down and the leader had restarted since).
/// </summary>
public sealed class ProposalFormatTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(CacheCommand.FormatVersion, 0)]
    [InlineData(CacheCommand.TransactionVersion, 0)]
    [InlineData(CacheCommand.OldestFormatVersion, 0)]
    [InlineData(CacheCommand.TransactionVersion, CacheCommand.FormatVersion)]
    [InlineData(CacheCommand.OldestFormatVersion, CacheCommand.FormatVersion)]
    public async Task A_leader_counts_a_member_it_has_not_heard_from_as_reading_the_newest_format_the_log_holds(byte logFormat, byte foundingFormat)
    {
        // Node 1 of three (nodes 2 and 3 exist only as the messages the test makes up). Node 2, leading term 1, gives it
        // an entry in logFormat; node 1 then leads term 2, having heard node 2's build read the newest format and nothing
        // at all from node 3 (down since before node 1 started). A founding format newer than what the log holds (a
        // founder first started on a newer build than the cluster's) does not count once the log says otherwise.
        var node = PeerlessNode.Start(foundingEntryFormat: foundingFormat);
        var (disk, driver) = (node.Disk, node.Driver);
        var inbox = node.Inbox;
        try
        {
            var previous = disk.LastIndex;
            var entry = Entries.Set(Entries.NoSession, "k", "v");
            CacheCommand.SetFormatVersion(entry, logFormat);
            Assert.True(inbox.TryPost(new Message { Type = MessageType.Append, From = 2, To = 1, Term = 1, Index = previous, LogTerm = 1, Commit = previous + 1, Entries = [new Entry(previous + 1, 1, EntryType.Normal, entry)] }, 0));
            await DriverWaits.UntilAsync(driver, _ => driver.Cache.AppliedIndex == previous + 1, "node 1 did not apply node 2's entry");

            inbox.PeerEntryFormatHeard(2, CacheCommand.FormatVersion);
            await node.LeadAsync(term: 2, voter: 2);

            // Its no-op, then the write: in the newest format every member reads, as far as node 1 knows.
            _ = driver.ExecuteAsync(new Proto.Command { Id = 1, Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFromUtf8("w") } });
            var written = previous + 3;
            await DriverWaits.UntilAsync(driver, _ => disk.LastIndex >= written, $"no write written at {written}");
            Assert.Equal(logFormat, await EntryFormatAsync(node, written));
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(CacheCommand.FormatVersion, CacheCommand.FormatVersion)]
    [InlineData(0, CacheCommand.OldestFormatVersion)]
    public async Task On_a_new_cluster_a_founder_never_heard_from_counts_as_reading_the_format_the_cluster_was_founded_with(byte foundingFormat, byte expected)
    {
        // Node 1's log holds only the founding membership (no entry in any format yet); node 2 reads the newest format,
        // node 3 has never come up. 0 stands for a log founded before the founding format was recorded.
        var node = PeerlessNode.Start(foundingEntryFormat: foundingFormat);
        var (disk, driver) = (node.Disk, node.Driver);
        try
        {
            node.Inbox.PeerEntryFormatHeard(2, CacheCommand.FormatVersion);
            var opened = await node.LeadAsync(term: 2, voter: 2);

            // COPY needs format 6: proposed only if node 3 counts as reading it; otherwise refused at once.
            var reply = driver.ExecuteAsync(new Proto.Command { Id = 1, Copy = new Proto.CopyRequest { Source = ByteString.CopyFromUtf8("a"), Destination = ByteString.CopyFromUtf8("b") } });
            var written = opened + 1;
            await DriverWaits.UntilAsync(driver, _ => reply.IsCompleted || disk.LastIndex >= written, "COPY neither written nor refused");
            if (expected < CacheCommand.SetRangeAndCopyVersion)
            {
                Assert.Equal("ERR COPY needs every node on a build that reads log format 6 (a rolling upgrade is in progress)", (await reply).Error);
                return;
            }

            if (reply.IsCompleted)
            {
                Assert.Fail($"COPY refused: {await reply}");
            }

            Assert.Equal(expected, await EntryFormatAsync(node, written));
        }
        finally
        {
            await node.DisposeAsync();
        }
    }

    /// <summary>The format byte of the entry node 1's log holds at <paramref name="index"/> (read on its loop).</summary>
    private static Task<byte> EntryFormatAsync(PeerlessNode node, ulong index) =>
        node.Driver.RunOnLoopAsync(_ =>
        {
            var entries = new List<Entry>();
            Assert.Equal(LogReadStatus.Ok, node.Disk.TryGetEntries(index, index + 1, ulong.MaxValue, entries));
            return entries[0].Data.Span[0];
        }).WaitAsync(Patience);
}
