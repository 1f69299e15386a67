using System.Collections.Concurrent;
using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>One real node process on 127.0.0.1: start, SIGKILL, SIGSTOP/SIGCONT, graceful stop; its output kept for diagnosis.</summary>
internal sealed class NodeProcess(ulong id, int grpcPort, int httpPort, string dataDirectory, Func<ulong, IReadOnlyList<string>> arguments) : IAsyncDisposable
{
    private readonly ConcurrentQueue<string> _output = new();
    private Process? _process;

    public ulong Id { get; } = id;

    public int GrpcPort { get; } = grpcPort;

    public int HttpPort { get; } = httpPort;

    public string GrpcUrl => $"http://127.0.0.1:{GrpcPort}";

    public string DataDirectory { get; } = dataDirectory;

    public bool IsRunning => _process is { HasExited: false };

    public int? ProcessId => _process?.Id;

    public void Start(params string[] extraArguments)
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"node {Id} is already running");
        }

        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(RepoPaths.NodeDll);
        foreach (var argument in arguments(Id).Concat(extraArguments))
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_gcServer"] = "0"; // several nodes share two cores in tests
        info.Environment["Logging__Console__FormatterName"] = "simple";
        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Capture(e.Data);
        process.ErrorDataReceived += (_, e) => Capture(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        Capture($"--- node {Id} started, pid {process.Id}");
    }

    /// <summary>SIGKILL: no shutdown code runs, exactly like a crash or power loss of the process.</summary>
    public void Kill()
    {
        if (_process is { HasExited: false } process)
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Capture($"--- node {Id} killed");
        }
    }

    public void Pause() => Signal("STOP");

    public void Resume() => Signal("CONT");

    /// <summary>SIGTERM and wait: the node's graceful shutdown (which hands over leadership) runs.</summary>
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

    public string RecentOutput(int lines = 80) => string.Join(Environment.NewLine, _output.TakeLast(lines));

    private void Signal(string signal)
    {
        if (_process is { HasExited: false } process)
        {
            using var kill = Process.Start("kill", $"-{signal} {process.Id}");
            kill.WaitForExit();
        }
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
