namespace Dcache.Storage;

/// <summary>
/// Another process holds the data directory's lock (a node, or an offline tool such as a restore). Starting a second
/// process on it is an operator's mistake that a message answers, not a fault that a stack trace explains.
/// </summary>
public sealed class DataDirectoryInUseException(string message, Exception inner) : InvalidOperationException(message, inner);
