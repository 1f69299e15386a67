using System.Runtime.ExceptionServices;
using FASTER.core;

namespace Dcache.Storage;

/// <summary>Waiting for a FasterLog commit without waiting for ever.</summary>
internal static class FasterLogCommits
{
    private const int PollMilliseconds = 50;

    /// <summary>
    /// A full commit of <paramref name="log"/> (its metadata included), waited for in short steps that call
    /// <paramref name="throwIfWriteFailed"/> meanwhile. FasterLog writes the commit metadata on a task of its own and
    /// drops a failure there (a full disk): its commit task would then never finish, and a caller waiting on it would
    /// hang for good, holding whatever it held.
    /// </summary>
    public static void CommitAndWait(FasterLog log, Action throwIfWriteFailed)
    {
        throwIfWriteFailed();
        var commit = log.CommitAsync().AsTask();
        try
        {
            while (!commit.Wait(PollMilliseconds))
            {
                throwIfWriteFailed();
            }
        }
        catch (AggregateException ex) when (ex.InnerException is CommitFailureException)
        {
            throwIfWriteFailed();
            ExceptionDispatchInfo.Throw(ex.InnerException);
        }

        throwIfWriteFailed();
    }
}
