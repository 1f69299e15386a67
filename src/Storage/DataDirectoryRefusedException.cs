namespace Dcache.Storage;

/// <summary>
/// The data directory cannot be opened as this node's: another process holds its lock (a node, or an offline tool such
/// as a restore), it belongs to another node or cluster, or a restore into it did not finish. Each is an operator's
/// mistake that a message answers, not a fault that a stack trace explains.
/// </summary>
public sealed class DataDirectoryRefusedException : InvalidOperationException
{
    public DataDirectoryRefusedException(string message)
        : base(message)
    {
    }

    public DataDirectoryRefusedException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
