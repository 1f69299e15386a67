using Dcache.Node.Consensus;
using Dcache.Raft;

namespace Dcache.Node.Tests.Consensus;

public sealed class AddressBookTests
{
    private static readonly Dictionary<ulong, string> Configured = new()
    {
        [1] = "http://127.0.0.1:7001",
        [2] = "http://127.0.0.1:7002",
        [3] = "http://127.0.0.1:7003",
    };

    [Fact]
    public void A_peer_heard_but_not_yet_in_the_applied_membership_is_reachable_and_not_refused()
    {
        // Node 1 was down while node 4 joined: it knows node 4 only from node 4's traffic until it catches up.
        var book = new AddressBook(Configured);
        book.Follow(Membership.Of([1, 2, 3]));
        Assert.False(book.WasRemoved(4));

        book.Heard(4, "http://127.0.0.1:7004");

        Assert.Equal("http://127.0.0.1:7004", book.Find(4));
        Assert.Equal([1UL, 2, 3, 4], book.All.Keys);
    }

    [Theory]
    [InlineData("http://0.0.0.0:7004")]
    [InlineData("http://[::]:7004")]
    public void A_wildcard_address_a_peer_announces_is_not_taken_as_where_it_is(string announced)
    {
        // A node listening on every interface (GrpcUrl http://0.0.0.0:7001, usual in containers) announces that: another
        // host dialling it reaches itself.
        var book = new AddressBook(Configured);
        book.Follow(Membership.Of([1, 2, 3]));
        book.Heard(4, announced);
        Assert.Null(book.Find(4));
    }

    [Fact]
    public void The_address_a_members_change_carried_wins_over_the_one_it_announced()
    {
        var book = new AddressBook(Configured);
        book.Heard(4, "http://127.0.0.1:7004");
        book.Follow(Membership.Of([1, 2, 3], [4], [new(4UL, "http://proxy:9004")]));
        Assert.Equal("http://proxy:9004", book.Find(4));
    }

    [Fact]
    public void A_removed_member_is_refused_forgotten_and_not_relearned_from_its_traffic_until_added_back()
    {
        var book = new AddressBook(Configured);
        book.Follow(Membership.Of([1, 2, 3]));
        var changes = 0;
        book.Changed += _ => changes++;

        book.Follow(Membership.Of([1, 2]));
        Assert.True(book.WasRemoved(3));
        Assert.Null(book.Find(3));
        Assert.Equal(1, changes);

        book.Heard(3, "http://127.0.0.1:7003");
        Assert.Null(book.Find(3));
        Assert.Equal(1, changes);

        book.Follow(Membership.Of([1, 2], [3]));
        Assert.False(book.WasRemoved(3));
        Assert.Equal("http://127.0.0.1:7003", book.Find(3));
    }

    [Fact]
    public void A_members_configured_address_wins_over_the_one_it_joined_with_but_not_over_an_update()
    {
        var book = new AddressBook(Configured);
        var founded = Membership.Of([1, 2, 3], contexts: [new(1UL, "http://10.0.0.1:7001"), new(2UL, "http://10.0.0.2:7001"), new(3UL, "http://10.0.0.3:7001")]);
        book.Follow(founded);
        Assert.Equal("http://127.0.0.1:7003", book.Find(3));
        IReadOnlyDictionary<ulong, string>? announced = null;
        book.Changed += addresses => announced = addresses;

        // Node 3 moved: its new address outranks this node's InitialCluster, which names where it used to be.
        var moved = founded.Apply(new ConfChange(ConfChangeType.UpdateContext, 3, "http://10.0.0.3:7101"));
        book.Follow(moved);
        Assert.Equal("http://10.0.0.3:7101", book.Find(3));
        Assert.Equal("http://10.0.0.3:7101", announced![3]);
        Assert.Equal("http://127.0.0.1:7002", book.Find(2));

        // Restarted with the same configuration, a node rebuilds the same membership and so the same address.
        var restarted = new AddressBook(Configured);
        restarted.Follow(moved);
        Assert.Equal("http://10.0.0.3:7101", restarted.Find(3));

        // Removed and added back, the member is reached as before an update.
        book.Follow(moved.Apply(new ConfChange(ConfChangeType.Remove, 3)).Apply(new ConfChange(ConfChangeType.AddLearner, 3, "http://10.0.0.3:7201")));
        Assert.Equal("http://127.0.0.1:7003", book.Find(3));
    }
}
