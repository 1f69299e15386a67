using System.Collections.Concurrent;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// The node's metadata (meta.db) keeps showing the membership it runs with, as of the index it was applied at: what an
/// operator's recovery tools read from a stopped node's directory. Every membership change applied is recorded.
/// </summary>
public sealed class MembershipRecordTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_membership_change_applied_is_recorded_with_the_index_it_applied_at()
    {
        var recorded = new ConcurrentQueue<(ulong Index, Membership Membership)>();
        var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1));
        var driver = new RaftDriver(settings, MemoryStorage.Bootstrap(Membership.Of([1UL])), new NoSnapshots(), new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()),
            (index, membership) => recorded.Enqueue((index, membership)), TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance);
        var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, driver.Clocks, driver, NullLogger<PeerTransport>.Instance);
        driver.Start(transport);
        try
        {
            await DriverWaits.UntilAsync(driver, raft => raft.Role == Role.Leader, "the lone voter did not lead");
            var (proposal, refusal, applied) = await driver.ProposeConfChangeAsync(new ConfChange(ConfChangeType.AddLearner, 4, "http://127.0.0.1:7004"), _ => null).WaitAsync(Patience);
            Assert.Null(refusal);
            Assert.True(await applied!.WaitAsync(Patience));

            var (index, membership) = recorded.Last();
            Assert.True(index >= proposal.Index, $"recorded as of {index}, before the change's index {proposal.Index}");
            Assert.Equal(Membership.Of([1UL], [4UL], [KeyValuePair.Create(4UL, "http://127.0.0.1:7004")]), membership);
        }
        finally
        {
            await driver.DisposeAsync();
            await transport.DisposeAsync();
            metrics.Dispose();
        }
    }
}
