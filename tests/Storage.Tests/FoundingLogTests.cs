using Dcache.Raft;

namespace Dcache.Storage.Tests;

public sealed class FoundingLogTests
{
    private static readonly Dictionary<ulong, string> ThreeMembers = new()
    {
        [1] = "http://127.0.0.1:7001",
        [2] = "http://127.0.0.1:7002",
        [3] = "http://127.0.0.1:7003",
    };

    private static Membership Members(IEnumerable<KeyValuePair<ulong, string>> members) =>
        Membership.Of(members.Select(member => member.Key), contexts: members.ToDictionary());

    private static string Bootstrap(string clusterId, IEnumerable<KeyValuePair<ulong, string>> members) => FoundingLog.OfBootstrap(clusterId, Members(members));

    [Fact]
    public void FoundingMembersGivenTheSameListAgreeAndAnyOtherListOrClusterDiffers()
    {
        var founded = Bootstrap("prod", ThreeMembers);
        Assert.StartsWith("bootstrap:", founded, StringComparison.Ordinal);
        Assert.Equal(founded, Bootstrap("prod", ThreeMembers.Reverse()));

        // The same members reached at other addresses (a proxy per link) are the same membership.
        Assert.Equal(founded, Bootstrap("prod", new Dictionary<ulong, string>(ThreeMembers) { [3] = "http://127.0.0.1:7013" }));

        // A node started without Join whose list names itself as a fourth member; the same list under another cluster id.
        Assert.NotEqual(founded, Bootstrap("prod", new Dictionary<ulong, string>(ThreeMembers) { [4] = "http://127.0.0.1:7004" }));
        Assert.NotEqual(founded, Bootstrap("other", ThreeMembers));
    }

    [Fact]
    public void MembersRestoredFromOneBackupWithOneListAgreeAndAnyOtherMixDiffers()
    {
        var restored = FoundingLog.OfRestore("prod-restored", "prod/5000/3/1234/0badcafe", Members(ThreeMembers));
        Assert.StartsWith("restore:", restored, StringComparison.Ordinal);
        Assert.Equal(restored, FoundingLog.OfRestore("prod-restored", "prod/5000/3/1234/0badcafe", Members(ThreeMembers.Reverse())));
        Assert.NotEqual(restored, FoundingLog.OfRestore("prod-restored", "prod/5100/3/1250/00c0ffee", Members(ThreeMembers)));
        Assert.NotEqual(restored, FoundingLog.OfRestore("prod-restored", "prod/5000/3/1234/0badcafe", Members(ThreeMembers.Take(2))));
    }

    [Fact]
    public void EachRecoveryIsItsOwnFounding()
    {
        var first = FoundingLog.OfRecovery();
        Assert.StartsWith("recovery:", first, StringComparison.Ordinal);
        Assert.NotEqual(first, FoundingLog.OfRecovery());
    }
}
