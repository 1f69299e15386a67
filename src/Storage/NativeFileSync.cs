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
    private const int CreateWriteOnlyFlags = 0x1 | 0x40 | 0x200 | 0x80000; // O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC on Linux x64 and arm64
    private const int FileExists = 17; // EEXIST
    private const int NoSuchEntry = 2; // ENOENT
    private const int OwnerReadWrite = 0x180; // 0600
    private const int EveryoneAll = 0x1FF; // 0777, less the umask, as Directory.CreateDirectory

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

    /// <summary>
    /// Why <paramref name="directory"/> cannot hold a node's files, in the operating system's words ("Read-only file
    /// system", "Permission denied", "Not a directory"), or null when it can: it is created if missing (durably), and a
    /// file is created, written, flushed to disk and deleted in it. The system calls are made directly because .NET
    /// replaces some of their errors with its own wording (ENOTDIR becomes "Could not find a part of the path").
    /// </summary>
    public static string? WhyNotWritable(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return WhyNotWritableManaged(directory);
        }

        var full = Path.GetFullPath(directory);
        if (WhyNoDirectory(full) is { } noDirectory)
        {
            return noDirectory;
        }

        var probe = ProbePath(full);
        var fd = Open(probe, CreateWriteOnlyFlags, OwnerReadWrite);
        if (fd < 0)
        {
            return $"creating file {probe} failed: {LastError()}";
        }

        string? failure = null;
        ReadOnlySpan<byte> oneByte = [1];
        if (Write(fd, oneByte, 1) != 1)
        {
            failure = $"writing file {probe} failed: {LastError()}";
        }
        else if (Fsync(fd) != 0)
        {
            failure = $"flushing file {probe} to disk failed: {LastError()}";
        }

        _ = Close(fd);
        if (Unlink(probe) != 0)
        {
            failure ??= $"deleting file {probe} failed: {LastError()}";
        }

        return failure;
    }

    /// <summary>As mkdir -p, but durable, and saying why not in the operating system's words.</summary>
    private static string? WhyNoDirectory(string full)
    {
        if (Mkdir(full, EveryoneAll) != 0)
        {
            var error = Marshal.GetLastPInvokeError();
            if (error == FileExists && Directory.Exists(full))
            {
                return null;
            }

            var parent = Path.GetDirectoryName(full.TrimEnd(Path.DirectorySeparatorChar));
            if (error != NoSuchEntry || parent is null)
            {
                return $"creating directory {full} failed: {Marshal.GetPInvokeErrorMessage(error)}";
            }

            if (WhyNoDirectory(parent) is { } noParent)
            {
                return noParent;
            }

            if (Mkdir(full, EveryoneAll) != 0)
            {
                return $"creating directory {full} failed: {LastError()}";
            }
        }

        try
        {
            SyncDirectory(Path.GetDirectoryName(full.TrimEnd(Path.DirectorySeparatorChar)) ?? full);
            return null;
        }
        catch (IOException ex)
        {
            return ex.Message;
        }
    }

    private static string? WhyNotWritableManaged(string directory)
    {
        try
        {
            CreateDirectoryDurably(directory);
            var probe = ProbePath(Path.GetFullPath(directory));
            using (var file = new FileStream(probe, FileMode.Create, FileAccess.Write))
            {
                file.WriteByte(1);
                file.Flush(flushToDisk: true);
            }

            File.Delete(probe);
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return ex.Message;
        }
    }

    /// <summary>
    /// The probe's name carries the process id, so that two processes checking one directory do not share a file. A
    /// probe of that name already there was left by a process killed mid-check that had this id (in a container, a node
    /// is process 1 at every start): it is overwritten, not taken for another process's.
    /// </summary>
    private static string ProbePath(string directory) => Path.Combine(directory, $".write-check-{Environment.ProcessId}");

    private static string LastError() => Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError());

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    private static partial int Fdatasync(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, ReadOnlySpan<byte> buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Unlink(string path);

    [LibraryImport("libc", EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Mkdir(string path, int mode);
}
