using System.Diagnostics;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests.Support;

/// <summary>Runs `dcachectl` as a child process, as an operator would, and returns its exit code and output.</summary>
internal static class Dcachectl
{
    public sealed record Result(int Exit, string Output, string Error)
    {
        public override string ToString() => $"exit {Exit}\nstdout:\n{Output}\nstderr:\n{Error}";
    }

    public static Task<Result> RunAsync(ITestOutputHelper log, params string[] arguments) =>
        RunWithEnvironmentAsync(log, new Dictionary<string, string>(), arguments);

    public static Task<Result> RunWithEnvironmentAsync(ITestOutputHelper log, IReadOnlyDictionary<string, string> environment, params string[] arguments)
    {
        var info = StartInfo(arguments);
        foreach (var (name, value) in environment)
        {
            info.Environment[name] = value;
        }

        return RunAsync(log, info, $"dcachectl {string.Join(' ', arguments)}");
    }

    /// <summary>
    /// Runs dcachectl and, while it runs, <paramref name="whileRunning"/> with it (to pause it with a signal, say); the
    /// result once both are done.
    /// </summary>
    public static Task<Result> RunAlongsideAsync(ITestOutputHelper log, Func<Process, Task> whileRunning, params string[] arguments) =>
        RunAsync(log, StartInfo(arguments), $"dcachectl {string.Join(' ', arguments)}", whileRunning);

    private static ProcessStartInfo StartInfo(string[] arguments)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(RepoPaths.CtlDll);
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_gcServer"] = "0";
        return info;
    }

    /// <summary>Runs dcachectl with its files limited to <paramref name="kib"/> KiB (`ulimit -f`): the kernel stops it as its writes pass that.</summary>
    public static Task<Result> RunUnderFileSizeLimitAsync(ITestOutputHelper log, int kib, params string[] arguments)
    {
        var info = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add($"ulimit -f {kib.ToString(System.Globalization.CultureInfo.InvariantCulture)} && exec \"$0\" \"$@\"");
        info.ArgumentList.Add("dotnet");
        info.ArgumentList.Add(RepoPaths.CtlDll);
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        // The runtime's W^X double mapping sizes a shared-memory file past the limit; without it, only dcachectl's files count.
        info.Environment["DOTNET_EnableWriteXorExecute"] = "0";
        return RunAsync(log, info, $"ulimit -f {kib}; dcachectl {string.Join(' ', arguments)}");
    }

    private static async Task<Result> RunAsync(ITestOutputHelper log, ProcessStartInfo info, string shown, Func<Process, Task>? whileRunning = null)
    {
        using var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start dcachectl");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            if (whileRunning is not null)
            {
                await whileRunning(process).WaitAsync(deadline.Token);
            }

            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{shown} did not finish in 60 s");
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        var result = new Result(process.ExitCode, await stdout, await stderr);
        log.WriteLine($"$ {shown}\n{result}");
        return result;
    }

    /// <summary>Asserts a failure the operator can read: the expected exit code, the phrase, and no stack trace.</summary>
    public static void AssertFails(Result result, int exit, string phrase)
    {
        Assert.True(result.Exit == exit, $"expected exit {exit}: {result}");
        Assert.Contains(phrase, result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", result.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", result.Error, StringComparison.Ordinal);
    }
}
