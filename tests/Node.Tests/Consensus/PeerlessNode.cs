using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Transport;
using Dcache.Raft;
using Microsoft.Extensions.Logging.Abstractions;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// Node 1 of a cluster of nodes 1, 2 and 3 (or more voters) whose peers exist only as the messages a test posts (what node 1 sends goes
/// nowhere): its driver over storage in memory, with elections far off (the test makes it campaign) and no snapshots.
/// Writes a gateway asks it to forward go to the address <paramref name="peers"/> gives for the leader, if any.
/// </summary>
internal sealed class PeerlessNode : IAsyncDisposable
{
    private readonly NodeMetrics _metrics = new();
    private readonly PeerTransport _transport;
    private readonly LeaderForwarder _forwarder;

    private PeerlessNode(IReadOnlyDictionary<ulong, string> peers, TimeSpan requestTimeout, byte foundingEntryFormat, IReadOnlyDictionary<ulong, string>? recordedAddresses, IReadOnlyList<ulong> voters, bool sendToPeers)
    {
        Disk = MemoryStorage.Bootstrap(Membership.Of(voters, contexts: recordedAddresses));
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1, ElectionTicks = 1_000 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromMilliseconds(50), requestTimeout)
        {
            FoundingEntryFormat = foundingEntryFormat,
        };
        _forwarder = new LeaderForwarder(new ClusterCredentials("test", "secret"), 1 << 20, _metrics, NullLogger<LeaderForwarder>.Instance);
        Addresses = new AddressBook(peers);
        Driver = new RaftDriver(settings, Disk, new NoSnapshots(), new CacheStateMachine(), Addresses, (_, _) => { }, TimeProvider.System, _metrics, NullLogger<RaftDriver>.Instance, _forwarder);
        _transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, Driver.Clocks, Driver, NullLogger<PeerTransport>.Instance);
        if (sendToPeers)
        {
            _transport.SetPeers(peers);
        }

        Driver.Start(_transport);
    }

    /// <param name="peers">Node id -> address (none by default: the peers have no address).</param>
    /// <param name="requestTimeout">How long a command may take (a minute by default).</param>
    /// <param name="foundingEntryFormat">The format the cluster was founded with (unknown by default).</param>
    /// <param name="peers">Where this node's configuration (its InitialCluster) says each peer is.</param>
    /// <param name="recordedAddresses">The addresses the founding entries of the log record (none if null).</param>
    /// <param name="voters">The founding voters (1, 2 and 3 if null); node 1 must be one.</param>
    /// <param name="sendToPeers">Whether what node 1 sends goes to <paramref name="peers"/>' addresses (by default, nowhere).</param>
    public static PeerlessNode Start(IReadOnlyDictionary<ulong, string>? peers = null, TimeSpan? requestTimeout = null, byte foundingEntryFormat = 0, IReadOnlyDictionary<ulong, string>? recordedAddresses = null, IReadOnlyList<ulong>? voters = null, bool sendToPeers = false) =>
        new(peers ?? new Dictionary<ulong, string>(), requestTimeout ?? TimeSpan.FromMinutes(1), foundingEntryFormat, recordedAddresses, voters ?? [1UL, 2UL, 3UL], sendToPeers);

    /// <summary>Node 1 of 1, 2 and 3, leading term 2 with its no-op applied: node 2 has answered it, node 3 never does.</summary>
    public static async Task<PeerlessNode> StartLeadingAsync(IReadOnlyDictionary<ulong, string> peers, IReadOnlyDictionary<ulong, string>? recordedAddresses = null)
    {
        var node = Start(peers, recordedAddresses: recordedAddresses);
        try
        {
            var noOp = await node.LeadAsync(term: 2, voter: 2);
            Assert.True(node.Inbox.TryPost(new Message { Type = MessageType.AppendResponse, From = 2, To = 1, Term = 2, Index = noOp }, 0));
            await DriverWaits.UntilAsync(node.Driver, raft => raft.AppliedIndex == noOp, "the no-op of term 2 did not apply");
            return node;
        }
        catch
        {
            await node.DisposeAsync();
            throw;
        }
    }

    public MemoryStorage Disk { get; }

    /// <summary>The node's address book, which its driver keeps following the applied membership.</summary>
    public AddressBook Addresses { get; }

    public RaftDriver Driver { get; }

    public IRaftInbox Inbox => Driver;

    /// <summary>
    /// Node 1 campaigns and, with node <paramref name="voter"/>'s votes, leads term <paramref name="term"/>; returns its
    /// last index then (the empty entry that opens its term).
    /// </summary>
    public Task<ulong> LeadAsync(ulong term, ulong voter) => LeadWithVotesAsync(term, [voter]);

    /// <summary>As <see cref="LeadAsync"/>, with the votes of <paramref name="voters"/> (enough for a larger cluster).</summary>
    public Task<ulong> LeadWithVotesAsync(ulong term, IReadOnlyList<ulong> voters) =>
        Driver.RunOnLoopAsync(raft =>
        {
            raft.Campaign();
            foreach (var voter in voters)
            {
                raft.Step(new Message { Type = MessageType.PreVoteResponse, From = voter, To = 1, Term = term });
            }

            foreach (var voter in voters)
            {
                raft.Step(new Message { Type = MessageType.VoteResponse, From = voter, To = 1, Term = term });
            }

            Assert.Equal(Role.Leader, raft.Role);
            return raft.LastIndex;
        }).WaitAsync(TimeSpan.FromSeconds(60));

    /// <summary>Node 1 follows node <paramref name="leader"/>, which leads term <paramref name="term"/> (a heartbeat from it arrives).</summary>
    public Task FollowAsync(ulong leader, ulong term) =>
        Driver.RunOnLoopAsync(raft =>
        {
            raft.Step(new Message { Type = MessageType.Heartbeat, From = leader, To = 1, Term = term });
            Assert.Equal(leader, raft.Leader);
            return true;
        }).WaitAsync(TimeSpan.FromSeconds(60));

    public async ValueTask DisposeAsync()
    {
        await Driver.DisposeAsync();
        await _transport.DisposeAsync();
        await _forwarder.DisposeAsync();
        _metrics.Dispose();
    }
}
