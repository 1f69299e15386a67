namespace Dcache.Storage;

/// <summary>
/// Data inside the durable (committed) range failed verification. The node must not start on it: starting would
/// silently lose or invent acknowledged writes. The message names the file and byte offset for the operator.
/// </summary>
public sealed class StorageCorruptionException : Exception
{
    public StorageCorruptionException(string filePath, long fileOffset, string problem)
        : base($"storage corruption in {filePath} at offset {fileOffset}: {problem}")
    {
        FilePath = filePath;
        FileOffset = fileOffset;
        Problem = problem;
    }

    public StorageCorruptionException()
        : this("(unknown)", -1, "unspecified")
    {
    }

    public StorageCorruptionException(string message)
        : this("(unknown)", -1, message)
    {
    }

    public StorageCorruptionException(string message, Exception innerException)
        : base(message, innerException)
    {
        FilePath = "(unknown)";
        FileOffset = -1;
        Problem = message;
    }

    public string FilePath { get; }

    public long FileOffset { get; }

    public string Problem { get; }
}
