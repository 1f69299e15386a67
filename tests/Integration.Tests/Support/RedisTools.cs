using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>Debian's redis-tools (redis-cli, redis-benchmark) run as an operator would; the test command installs them.</summary>
internal static class RedisTools
{
    public static Task<(int Exit, string Output)> RedisCliAsync(int port, string args) => RunAsync("redis-cli", $"--raw -p {port} {args}");

    /// <summary>redis-cli fed <paramref name="lines"/> on its standard input: one connection runs them in order.</summary>
    public static async Task<(int Exit, string Output)> RedisCliScriptAsync(int port, params string[] lines)
    {
        var info = new ProcessStartInfo("redis-cli", $"--raw -p {port}") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(info) ?? throw new InvalidOperationException("cannot start redis-cli; the test command installs redis-tools");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        foreach (var line in lines)
        {
            await process.StandardInput.WriteLineAsync(line);
        }

        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await stdout) + (await stderr));
    }

    public static async Task<(int Exit, string Output)> RunAsync(string program, string args)
    {
        var info = new ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {program}; the test command installs redis-tools");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await stdout) + (await stderr));
    }
}
