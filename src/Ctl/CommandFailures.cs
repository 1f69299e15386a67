using Dcache.Storage;

namespace Dcache.Ctl;

/// <summary>How the offline and backup commands end: a message and an exit code, never a stack trace.</summary>
internal static class CommandFailures
{
    /// <summary>Runs <paramref name="command"/>: a <see cref="FormatException"/> is a usage error (exit 2); a failed call, a bad file, a data directory in use, corrupt storage or a disk error is a failure (exit 1).</summary>
    public static async Task<int> ReportAsync(string name, Func<Task<int>> command)
    {
        try
        {
            return await command().ConfigureAwait(false);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"dcachectl {name}: {ex.Message}");
            return 2;
        }
        catch (Grpc.Core.RpcException ex)
        {
            Console.Error.WriteLine($"dcachectl {name}: {ClusterConnection.Describe(ex)}");
            return 1;
        }
        catch (Exception ex) when (ex is SnapshotFileException or InvalidOperationException or IOException or UnauthorizedAccessException or StorageCorruptionException
            or Microsoft.Data.Sqlite.SqliteException or InvalidDataException)
        {
            Console.Error.WriteLine($"dcachectl {name}: {ex.Message}");
            return 1;
        }
    }
}
