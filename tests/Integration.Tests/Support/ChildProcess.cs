using System.Collections.Concurrent;
using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>A program of ours run as a real child process: start, SIGKILL, SIGSTOP/SIGCONT, SIGTERM; its output kept for diagnosis.</summary>
internal sealed class ChildProcess(string name, string dll) : IAsyncDisposable
{
    private readonly ConcurrentQueue<string> _output = new();
    private Process? _process;
    private TaskCompletionSource _outputEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private TaskCompletionSource _errorEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string Name { get; } = name;

    /// <summary>False once the process has exited and everything it printed has been captured.</summary>
    public bool IsRunning => _process is { } process && !ExitedWithOutputCaptured(process);

    public int? ProcessId => _process?.Id;

    /// <summary>The exit code once the process has exited on its own (or was killed) and its output is captured, else null.</summary>
    public int? ExitCode => _process is { } process && ExitedWithOutputCaptured(process) ? process.ExitCode : null;

    /// <summary>
    /// HasExited turns true before the readers of the redirected output have delivered the last lines: a test that
    /// saw the exit and then read the output missed the message it looked for (seen twice in one full run). So an exit
    /// counts once both streams have ended too, which the closed pipes bring at once; a child of the process that
    /// still holds them (dcachectl dev's nodes) is waited for only briefly.
    /// </summary>
    private bool ExitedWithOutputCaptured(Process process)
    {
        if (!process.HasExited)
        {
            return false;
        }

        Task.WaitAll([_outputEnded.Task, _errorEnded.Task], TimeSpan.FromSeconds(5));
        return true;
    }

    public void Start(IEnumerable<string> arguments)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"{Name} is already running");
        }

        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(dll);
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_gcServer"] = "0"; // several processes share two cores in tests
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var outputEnded = _outputEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var errorEnded = _errorEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) => Received(e.Data, outputEnded);
        process.ErrorDataReceived += (_, e) => Received(e.Data, errorEnded);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        Capture($"--- {Name} started, pid {process.Id}");
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crash or power loss of the process.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } process)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Capture($"--- {Name} killed");
        }
    }

    public void Pause() => Signal("STOP");

    public void Resume() => Signal("CONT");

    /// <summary>SIGTERM and wait: the program's graceful shutdown runs; past the timeout it is killed.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (_process is not { HasExited: false } process)
        {
            return;
        }

        Signal("TERM");
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <summary>Resident memory in bytes, from /proc (0 when not running).</summary>
    public long ResidentBytes()
    {
        if (_process is not { HasExited: false } process)
        {
            return 0;
        }

        foreach (var line in File.ReadLines($"/proc/{process.Id}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line.AsSpan(6).Trim().TrimEnd("kB").Trim(), System.Globalization.CultureInfo.InvariantCulture) * 1024;
            }
        }

        return 0;
    }

    public string RecentOutput(int lines = 80) => string.Join(Environment.NewLine, _output.TakeLast(lines));

    private void Signal(string signal)
    {
        if (_process is { HasExited: false } process)
        {
            using var kill = Process.Start("kill", $"-{signal} {process.Id}");
            kill.WaitForExit();
        }
    }

    /// <summary>A line of the process's output, or (null) the end of that stream.</summary>
    private void Received(string? line, TaskCompletionSource ended)
    {
        if (line is null)
        {
            ended.TrySetResult();
            return;
        }

        Capture(line);
    }

    private void Capture(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        while (_output.Count > 2000 && _output.TryDequeue(out _))
        {
        }
    }

    public ValueTask DisposeAsync()
    {
        Resume();
        Kill();
        _process?.Dispose();
        return ValueTask.CompletedTask;
    }
}
