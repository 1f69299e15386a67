using System.Globalization;

namespace Dcache.Storage;

/// <summary>
/// TEST ONLY: the slow disk of <see cref="StorageOptions.TestOnlySlowDiskFile"/>. The file's content (a number of
/// milliseconds; absent or unreadable means 0) is re-read at most every 100 ms, so a durable commit costs one clock
/// read when the switch is on and nothing when it is off.
/// </summary>
internal sealed class TestOnlySlowDisk(string path)
{
    private const long RereadMilliseconds = 100;
    private long _readAt;
    private bool _read;
    private int _delayMilliseconds;

    /// <summary>Sleeps for the configured delay, as a disk that takes that long to make a write durable would.</summary>
    public void Delay()
    {
        if (path.Length == 0)
        {
            return;
        }

        var now = Environment.TickCount64;
        if (!_read || now - _readAt >= RereadMilliseconds)
        {
            _read = true;
            _readAt = now;
            _delayMilliseconds = Read(path);
        }

        if (_delayMilliseconds > 0)
        {
            Thread.Sleep(_delayMilliseconds);
        }
    }

    private static int Read(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var ms) ? Math.Min(ms, 10_000) : 0;
        }
        catch (IOException)
        {
            return 0;
        }
        catch (UnauthorizedAccessException)
        {
            return 0;
        }
    }
}
