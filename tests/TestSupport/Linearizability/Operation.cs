namespace Dcache.TestSupport.Linearizability;

/// <summary>The operations of the key-value model the checker understands.</summary>
public enum OperationKind
{
    /// <summary>Output is the value read, or null when the key was absent.</summary>
    Get,
    /// <summary>Input is the value written (make it unique per write so a read names exactly one write). Output is ignored.</summary>
    Put,
    /// <summary>Removes the key. Output is ignored.</summary>
    Delete,
    /// <summary>Input is the delta (decimal integer); an absent key counts as 0. Output is the new value (decimal), or null when it never returned.</summary>
    Increment,
}

/// <summary>
/// One client operation as a client saw it. Times are in any monotonic unit shared by the whole history.
/// An operation whose outcome is unknown (timed out, "outcome unknown" error) has no <see cref="ReturnTime"/>:
/// it may take effect at any point after its call, or never. Operations known to have failed without effect
/// (and failed reads) are left out of the history altogether.
/// </summary>
public sealed record Operation(
    int ClientId,
    OperationKind Kind,
    string Key,
    string? Input,
    string? Output,
    long CallTime,
    long? ReturnTime)
{
    public override string ToString() =>
        $"c{ClientId} {Kind} {Key} in={Input ?? "-"} out={Output ?? "nil"} [{CallTime}, {(ReturnTime is { } r ? r.ToString(System.Globalization.CultureInfo.InvariantCulture) : "inf")}]";
}
