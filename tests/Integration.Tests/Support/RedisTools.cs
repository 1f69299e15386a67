using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>Debian's redis-tools (redis-cli, redis-benchmark) run as an operator would; the test command installs them.</summary>
internal static class RedisTools
{
    public static Task<(int Exit, string Output)> RedisCliAsync(int port, string args) => RunAsync("redis-cli", $"--raw -p {port} {args}");

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
