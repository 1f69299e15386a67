namespace Dcache.Storage;

/// <summary>
/// The Raft log or the snapshot store could not be written durably (a full disk, an I/O error). Nothing that depended
/// on the failed write was acknowledged; the log is not written again in this process, and a snapshot cut short is
/// never catalogued. The node must stop, and can be restarted once the cause is fixed: it recovers what reached the
/// disk and catches up from the leader.
/// </summary>
public sealed class StorageWriteException : IOException
{
    public StorageWriteException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public StorageWriteException()
    {
    }

    public StorageWriteException(string message)
        : base(message)
    {
    }
}
