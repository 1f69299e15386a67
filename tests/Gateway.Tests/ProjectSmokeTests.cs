using Dcache.Gateway.Cluster;

namespace Dcache.Gateway.Tests;

public sealed class ProjectSmokeTests
{
    [Fact]
    public void ReadModesAreDistinct() => Assert.NotEqual(ReadMode.Linearizable, ReadMode.Local);
}
