namespace Dcache.Integration.Tests.Support;

/// <summary>Where the repository and the built programs are, found from the test assembly's location.</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    /// <summary>Release or Debug: whatever this test assembly was built as, so the node under test matches it.</summary>
    public static string Configuration { get; } =
        AppContext.BaseDirectory.Split(Path.DirectorySeparatorChar).Contains("Release") ? "Release" : "Debug";

    public static string NodeDll => Program("Node", "Dcache.Node.dll");

    public static string GatewayDll => Program("Gateway", "Dcache.Gateway.dll");

    public static string CtlDll => Program("Ctl", "dcachectl.dll");

    private static string Program(string project, string dll)
    {
        var path = Path.Combine(Root, "src", project, "bin", Configuration, "net10.0", dll);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{dll} is not built; build the solution first", path);
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Dcache.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("cannot find Dcache.sln above " + AppContext.BaseDirectory);
    }
}
