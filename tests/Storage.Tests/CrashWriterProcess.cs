using System.Diagnostics;
using System.Globalization;

namespace Dcache.Storage.Tests;

/// <summary>
/// The crash writer child process (tests/Storage.CrashWriter) started with `dotnet &lt;dll&gt;`: its stdout lines are
/// collected as they arrive; <see cref="Kill"/> sends SIGKILL. Disposing kills it if still running.
/// </summary>
internal sealed class CrashWriterProcess : IDisposable
{
    private readonly Process _process;
    private readonly List<string> _lines = [];
    private readonly List<string> _errors = [];
    private readonly Task _stdoutPump;
    private readonly Task _stderrPump;
    private int _acknowledged;

    public CrashWriterProcess(string dataDirectory, int seed, LogFileOptions log, string mix, bool writeHints)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(WriterDll);
        foreach (var argument in new[] { dataDirectory, I(seed), I(log.PageSizeBits), I(log.MemorySizeBits), I(log.SegmentSizeBits), mix, writeHints ? "hints" : "nohints" })
        {
            start.ArgumentList.Add(argument);
        }

        _process = Process.Start(start) ?? throw new InvalidOperationException("could not start the crash writer");
        _stdoutPump = Pump(_process.StandardOutput, _lines, countAcks: true);
        _stderrPump = Pump(_process.StandardError, _errors, countAcks: false);
    }

    /// <summary>Operations reported durable so far.</summary>
    public int Acknowledged => Volatile.Read(ref _acknowledged);

    public bool Ready
    {
        get
        {
            lock (_lines)
            {
                return _lines.Count > 0;
            }
        }
    }

    public bool HasExited => _process.HasExited;

    public string Errors
    {
        get
        {
            lock (_errors)
            {
                return string.Join('\n', _errors);
            }
        }
    }

    /// <summary>SIGKILL, then every line the child wrote before it died.</summary>
    public IReadOnlyList<string> Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }

        _process.WaitForExit();
        if (!Task.WaitAll([_stdoutPump, _stderrPump], TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException("the crash writer's output did not end after it was killed");
        }

        lock (_lines)
        {
            return [.. _lines];
        }
    }

    /// <summary>Waits (up to <paramref name="deadline"/>) until <paramref name="condition"/> holds or the child exits.</summary>
    public bool WaitFor(Func<CrashWriterProcess, bool> condition, TimeSpan deadline)
    {
        var stopwatch = Stopwatch.StartNew();
        using var tick = new ManualResetEventSlim();
        while (!condition(this))
        {
            if (_process.HasExited || stopwatch.Elapsed > deadline)
            {
                return false;
            }

            tick.Wait(1); // poll the condition; the child's progress is not signalled otherwise
        }

        return true;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }
        }
        catch (InvalidOperationException)
        {
        }

        _process.Dispose();
    }

    private static string WriterDll
    {
        get
        {
            // This assembly runs from tests/Storage.Tests/bin/<configuration>/<tfm>/; the writer builds beside it.
            var baseDirectory = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
            var tfm = baseDirectory.Name;
            var configuration = baseDirectory.Parent!.Name;
            var testsDirectory = baseDirectory.Parent!.Parent!.Parent!.Parent!.FullName;
            var dll = Path.Combine(testsDirectory, "Storage.CrashWriter", "bin", configuration, tfm, "Dcache.Storage.CrashWriter.dll");
            return File.Exists(dll) ? dll : throw new FileNotFoundException("build tests/Storage.CrashWriter first", dll);
        }
    }

    private static string I(int value) => value.ToString(CultureInfo.InvariantCulture);

    private Task Pump(StreamReader reader, List<string> into, bool countAcks) => Task.Run(async () =>
    {
        while (await reader.ReadLineAsync() is { } line)
        {
            lock (into)
            {
                into.Add(line);
            }

            if (countAcks && line.StartsWith("D ", StringComparison.Ordinal))
            {
                Interlocked.Increment(ref _acknowledged);
            }
        }
    });
}
