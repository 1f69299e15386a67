using System.Diagnostics;

namespace Dcache.Integration.Tests.Support;

/// <summary>Waits for a condition with a deadline (never a bare sleep standing in for synchronisation).</summary>
internal static class Eventually
{
    public static async Task<TimeSpan> WaitAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
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

        throw new TimeoutException($"timed out after {timeout.TotalSeconds:F1} s waiting for {what}" + (last is null ? "" : $" (last error: {last.Message})"));
    }

    public static Task<TimeSpan> WaitAsync(Func<bool> condition, TimeSpan timeout, string what) =>
        WaitAsync(() => Task.FromResult(condition()), timeout, what);
}
