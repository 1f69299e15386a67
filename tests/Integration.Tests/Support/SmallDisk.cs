namespace Dcache.Integration.Tests.Support;

/// <summary>
/// A tmpfs of a given size mounted on a directory, so a node can run out of disk space for real (ENOSPC). Needs
/// root, as the test command already does to install packages. Disposing unmounts it (lazily: a process may still
/// hold files there).
/// </summary>
internal sealed class SmallDisk : IDisposable
{
    private SmallDisk(string path) => Path = path;

    public string Path { get; }

    public static async Task<SmallDisk> MountAsync(string path, int megabytes)
    {
        Directory.CreateDirectory(path);
        var (exit, output) = await RedisTools.RunAsync("mount", $"-t tmpfs -o size={megabytes}m tmpfs {path}");
        if (exit != 0)
        {
            throw new InvalidOperationException($"cannot mount a {megabytes} MiB tmpfs on {path} (this test needs root): {output}");
        }

        return new SmallDisk(path);
    }

    /// <summary>Makes the disk larger, keeping its files: the operator freed space.</summary>
    public async Task GrowAsync(int megabytes)
    {
        var (exit, output) = await RedisTools.RunAsync("mount", $"-o remount,size={megabytes}m {Path}");
        if (exit != 0)
        {
            throw new InvalidOperationException($"cannot grow the tmpfs on {Path}: {output}");
        }
    }

    public void Dispose()
    {
        using var umount = System.Diagnostics.Process.Start("umount", ["-l", Path]);
        umount.WaitForExit();
    }
}
