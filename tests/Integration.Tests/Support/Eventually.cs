using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// Waits for a condition with a deadline (never a bare sleep standing in for synchronisation). Shared by linking with
/// the chaos suite, the gateway's and the node's tests.
/// </summary>
internal static class Eventually
{
    public static Task<TimeSpan> WaitAsync(Func<Task<bool>> condition, TimeSpan timeout, string what) =>
        WaitAsync(condition, timeout, () => what);

    public static Task<TimeSpan> WaitAsync(Func<bool> condition, TimeSpan timeout, string what) =>
        WaitAsync(() => Task.FromResult(condition()), timeout, () => what);

    /// <summary>As the others, with <paramref name="describe"/> asked at the deadline, when the state it names is the one that failed.</summary>
    public static Task<TimeSpan> WaitAsync(Func<bool> condition, TimeSpan timeout, Func<string> describe) =>
        WaitAsync(() => Task.FromResult(condition()), timeout, describe);

    /// <summary>Waits until <paramref name="found"/> returns something, and returns it.</summary>
    public static async Task<T> ValueAsync<T>(Func<T?> found, TimeSpan timeout, Func<string> describe)
        where T : class
    {
        T? value = null;
        await WaitAsync(() => (value = found()) is not null, timeout, describe).ConfigureAwait(false);
        return value!;
    }

    private static async Task<TimeSpan> WaitAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<string> describe)
    {
        var clock = Stopwatch.StartNew();
        Exception? last = null;
        while (clock.Elapsed < timeout)
        {
            try
            {
                if (await condition().ConfigureAwait(false))
                {
                    return clock.Elapsed;
                }
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                last = ex;
            }

            await Task.Delay(25).ConfigureAwait(false);
        }

        throw new TimeoutException($"timed out after {timeout.TotalSeconds:F1} s waiting for {describe()}" + (last is null ? "" : $" (last error: {last.Message})"));
    }
}
