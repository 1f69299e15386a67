namespace Dcache.Storage;

/// <summary>
/// A snapshot was begun while another is being written (the store writes one at a time): for a snapshot arriving from
/// the leader while the node writes its own, a passing refusal; the leader sends it again later.
/// </summary>
public sealed class SnapshotStoreBusyException : InvalidOperationException
{
    public SnapshotStoreBusyException(string message)
        : base(message)
    {
    }

    public SnapshotStoreBusyException()
    {
    }

    public SnapshotStoreBusyException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
