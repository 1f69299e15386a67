using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

/// <summary>
/// The edge of <see cref="CacheStateMachine.MaxKeptReplyBytes"/>: replicated state, so the byte where a kept reply turns
/// into an error must not move between builds (a replica on another build would answer a retry differently).
/// </summary>
public sealed class KeptReplyBoundaryTests
{
    private const ulong Client = 0xB0B;

    // A Bulk reply as a snapshot writes it: kind (1) + length (counted as 5) + the bytes.
    private const int BulkOverhead = 1 + 5;

    [Fact]
    public void A_bulk_reply_of_exactly_the_kept_size_is_kept_whole_and_one_byte_more_is_not()
    {
        var cache = new CacheHarness();
        var fits = new string('v', (int)CacheStateMachine.MaxKeptReplyBytes - BulkOverhead);
        cache.Set("fits", fits);
        var getdel = Entries.GetDelete(cache.Envelope(Client, 1), "fits");
        Assert.Equal(Bulk(fits), cache.Apply(getdel));
        Assert.Equal(Bulk(fits), cache.Apply(getdel));

        var over = fits + "v";
        cache.Set("over", over);
        var larger = Entries.GetDelete(cache.Envelope(Client, 2), "over");
        Assert.Equal(Bulk(over), cache.Apply(larger));
        Assert.Equal(Error(CacheErrors.ReplyNotKept), cache.Apply(larger));
    }
}
