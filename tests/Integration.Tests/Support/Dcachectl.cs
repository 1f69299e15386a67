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

    public static async Task<Result> RunWithEnvironmentAsync(ITestOutputHelper log, IReadOnlyDictionary<string, string> environment, params string[] arguments)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(RepoPaths.CtlDll);
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_gcServer"] = "0";
        foreach (var (name, value) in environment)
        {
            info.Environment[name] = value;
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start dcachectl");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"dcachectl {string.Join(' ', arguments)} did not finish in 60 s");
        }

        var result = new Result(process.ExitCode, await stdout, await stderr);
        log.WriteLine($"$ dcachectl {string.Join(' ', arguments)}\n{result}");
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
