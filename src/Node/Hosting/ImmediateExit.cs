using System.Runtime.InteropServices;

namespace Dcache.Node.Hosting;

/// <summary>
/// Ends the process at once with an exit code: no shutdown code, finalizer or exit handler runs, so nothing can hold
/// it up. Only for a node that has already failed and logged why (see <see cref="NodeRuntime"/>).
/// </summary>
internal static class ImmediateExit
{
    public static void Now(int exitCode)
    {
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            Exit(exitCode);
        }

        // Elsewhere the runtime's own exit, which runs exit handlers (the host's waits for its shutdown, bounded).
        Environment.Exit(exitCode);
    }

    // DllImport rather than LibraryImport: an int argument needs no marshalling stub, so the project stays free of unsafe code.
    [DllImport("libc", EntryPoint = "_exit")]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern void Exit(int status);
}
