using Dcache.Ctl;
using Dcache.Protocol.Admin;

namespace Dcache.Node.Tests.Ctl;

/// <summary>
/// What dcachectl takes for "already in effect" after a membership change whose outcome it could not know: the leader's
/// member list must show the state asked for, by the log's record of the member rather than where the leader dials it.
/// </summary>
public sealed class MemberStatesTests
{
    private static MemberListReply ListOf(params MemberInfo[] members)
    {
        var list = new MemberListReply { LeaderId = 1, Term = 2 };
        list.Members.Add(new MemberInfo { Id = 1, Address = "http://127.0.0.1:7001", Voter = true });
        list.Members.Add(members);
        return list;
    }

    [Fact]
    public void A_learner_added_at_the_address_asked_is_in_effect_though_the_leader_dials_it_elsewhere()
    {
        // The leader's InitialCluster lists node 4 at a proxy: its member list's address is the proxy's.
        var list = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:9004", RecordedAddress = "http://127.0.0.1:7004" });

        Assert.Equal("node 4 is a learner at http://127.0.0.1:7004", MemberStates.LearnerAt(list, 4, "http://127.0.0.1:7004"));
        Assert.Equal("node 4 is a learner at http://127.0.0.1:7004", MemberStates.LearnerAt(list, 4, "HTTP://127.0.0.1:7004/"));
        Assert.Null(MemberStates.LearnerAt(list, 4, "http://127.0.0.1:9004"));
    }

    [Fact]
    public void A_learner_the_log_records_at_another_address_or_a_voter_is_not_the_add_asked()
    {
        var elsewhere = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004", RecordedAddress = "http://127.0.0.1:7005" });
        var voter = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004", RecordedAddress = "http://127.0.0.1:7004", Voter = true });

        Assert.Null(MemberStates.LearnerAt(elsewhere, 4, "http://127.0.0.1:7004"));
        Assert.Null(MemberStates.LearnerAt(voter, 4, "http://127.0.0.1:7004"));
        Assert.Null(MemberStates.LearnerAt(ListOf(), 4, "http://127.0.0.1:7004"));
        Assert.Null(MemberStates.LearnerAt(elsewhere, 4, "not a url"));
    }

    [Fact]
    public void A_leader_that_records_no_address_is_judged_by_where_it_dials_the_member()
    {
        var list = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004" });

        Assert.Equal("node 4 is a learner at http://127.0.0.1:7004", MemberStates.LearnerAt(list, 4, "http://127.0.0.1:7004"));
    }

    [Fact]
    public void Only_an_update_is_a_move_and_only_its_address_counts()
    {
        var added = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004", RecordedAddress = "http://127.0.0.1:7004" });
        var moved = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:9004", RecordedAddress = "http://127.0.0.1:7014", MovedTo = "http://127.0.0.1:7014" });

        Assert.Null(MemberStates.MovedTo(added, 4, "http://127.0.0.1:7004"));
        Assert.Equal("node 4 was moved to http://127.0.0.1:7014", MemberStates.MovedTo(moved, 4, "http://127.0.0.1:7014"));
        Assert.Null(MemberStates.MovedTo(moved, 4, "http://127.0.0.1:9004"));
    }

    [Fact]
    public void Promotion_and_removal_are_judged_by_role_and_presence()
    {
        var learner = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004" });
        var voter = ListOf(new MemberInfo { Id = 4, Address = "http://127.0.0.1:7004", Voter = true });

        Assert.Null(MemberStates.Voter(learner, 4));
        Assert.Equal("node 4 is a voter", MemberStates.Voter(voter, 4));
        Assert.Null(MemberStates.NotMember(voter, 4));
        Assert.Equal("node 4 is not a member", MemberStates.NotMember(ListOf(), 4));
    }
}
