namespace Dcache.Storage.Tests;

/// <summary>A fresh directory under the system temp directory, deleted on dispose (tests dispose it in finally via using).</summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory(string prefix = "dcache-storage")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
