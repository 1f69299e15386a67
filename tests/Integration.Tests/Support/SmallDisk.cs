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

    /// <summary>Makes the disk read-only, keeping its files: a read-only mount, or one the kernel remounted so after errors.</summary>
    public async Task MakeReadOnlyAsync()
    {
        var (exit, output) = await RedisTools.RunAsync("mount", $"-o remount,ro {Path}");
        if (exit != 0)
        {
            throw new InvalidOperationException($"cannot remount the tmpfs on {Path} read-only: {output}");
        }
    }

    /// <summary>
    /// Leaves only about <paramref name="freeBytes"/> free (the size becomes what is used now plus that, in whole pages),
    /// so the next writes to it fill it for real; never makes it larger. Returns the bytes in use when it was shrunk.
    /// </summary>
    public async Task<long> LeaveFreeAsync(long freeBytes)
    {
        var output = "";
        // A writer may use more between the measure and the remount, which the kernel then refuses: measure again.
        for (var attempt = 0; attempt < 10; attempt++)
        {
            var drive = new DriveInfo(Path);
            var used = drive.TotalSize - drive.TotalFreeSpace;
            var page = Environment.SystemPageSize;
            var size = (used + freeBytes + page - 1) / page * page;
            if (size >= drive.TotalSize)
            {
                return used;
            }

            (var exit, output) = await RedisTools.RunAsync("mount", $"-o remount,size={size} {Path}");
            if (exit == 0)
            {
                return used;
            }
        }

        throw new InvalidOperationException($"cannot shrink the tmpfs on {Path} to leave {freeBytes} bytes free: {output}");
    }

    public void Dispose()
    {
        using var umount = System.Diagnostics.Process.Start("umount", ["-l", Path]);
        umount.WaitForExit();
    }
}
