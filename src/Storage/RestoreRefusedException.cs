namespace Dcache.Storage;

/// <summary>
/// A restore was refused the data directory before it wrote anything there: another process (a node, another restore)
/// holds it, or it is not empty. Whoever asked must delete nothing: what is there is someone else's.
/// </summary>
public sealed class RestoreRefusedException : InvalidOperationException
{
    public RestoreRefusedException()
        : base("the restore was refused the data directory")
    {
    }

    public RestoreRefusedException(string message)
        : base(message)
    {
    }

    public RestoreRefusedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
