namespace Dcache.Node.Tests;

public sealed class ProjectSmokeTests
{
    [Fact]
    public void Node_assembly_loads()
    {
        Assert.Equal("Dcache.Node", typeof(Program).Assembly.GetName().Name);
    }
}
