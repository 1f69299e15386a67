using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Dcache.Storage;

/// <summary>
/// The two durability primitives .NET does not expose: fdatasync on a file and fsync on a directory.
/// FileStream.Flush(true) is a full fsync, which also writes back the inode's timestamps on every call;
/// fdatasync skips that when the file size does not change. A directory must be fsynced after a file in it is
/// created, renamed or deleted for that change to survive a power cut (POSIX promises nothing otherwise).
/// </summary>
internal static partial class NativeFileSync
{
    private const int ReadOnlyDirectoryFlags = 0x10000; // O_DIRECTORY (O_RDONLY is 0) on Linux x64 and arm64

    public static void DataSync(SafeFileHandle handle)
    {
        if (!OperatingSystem.IsLinux())
        {
            // Other systems: a full flush is the portable equivalent.
            using var stream = new FileStream(handle, FileAccess.ReadWrite, 1);
            stream.Flush(flushToDisk: true);
            return;
        }

        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (Fdatasync(handle.DangerousGetHandle().ToInt32()) != 0)
            {
                throw new IOException($"fdatasync failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Makes the creation, rename or deletion of entries in <paramref name="directory"/> durable.</summary>
    public static void SyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // Windows has no directory fsync; NTFS journals metadata.
        }

        var fd = Open(directory, ReadOnlyDirectoryFlags);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {directory} to fsync it: errno {Marshal.GetLastPInvokeError()}");
        }

        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"fsync of directory {directory} failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>Creates <paramref name="directory"/> if missing and makes its entry in the parent durable.</summary>
    public static void CreateDirectoryDurably(string directory)
    {
        var full = Path.GetFullPath(directory);
        if (Directory.Exists(full))
        {
            return;
        }

        var parent = Path.GetDirectoryName(full.TrimEnd(Path.DirectorySeparatorChar));
        if (parent is not null)
        {
            CreateDirectoryDurably(parent);
        }

        Directory.CreateDirectory(full);
        if (parent is not null)
        {
            SyncDirectory(parent);
        }
    }

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int Fdatasync(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
