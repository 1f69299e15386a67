using Dcache.TestSupport.Network;

namespace Dcache.TestSupport.Tests.Network;

/// <summary>A link two overlapping faults cut stays cut until both healed; the final heal ends every cut.</summary>
public sealed class LinkTests
{
    [Fact]
    public void ALinkCutByTwoFaultsHealsWhenTheSecondReleasesIt()
    {
        var link = new Link();
        link.Cut();
        link.Cut();

        link.Release();
        Assert.True(link.IsCut);
        link.Release();
        Assert.False(link.IsCut);

        // A release of a link no fault holds changes nothing (a heal after the final heal-all, say).
        link.Release();
        Assert.False(link.IsCut);
        link.Cut();
        Assert.True(link.IsCut);
    }

    [Fact]
    public void HealingEverythingEndsEveryFaultsCut()
    {
        var link = new Link();
        link.Cut();
        link.Cut();

        link.Heal();
        Assert.False(link.IsCut);
        link.Release();
        link.Cut();
        link.Release();
        Assert.False(link.IsCut);
    }
}
