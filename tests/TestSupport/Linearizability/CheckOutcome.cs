namespace Dcache.TestSupport.Linearizability;

/// <summary>The verdict of a linearizability check, for one key or for a whole history.</summary>
public enum CheckOutcome
{
    /// <summary>A linearization was found.</summary>
    Linearizable,

    /// <summary>The search was exhaustive and no linearization exists.</summary>
    NotLinearizable,

    /// <summary>The search gave up (effort or time bound reached) before finding an answer either way.</summary>
    Unknown,
}
