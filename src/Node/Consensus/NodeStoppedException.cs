namespace Dcache.Node.Consensus;

/// <summary>
/// The Raft loop has stopped (the node is shutting down, or its loop failed): work handed to it is refused. An
/// <see cref="InvalidOperationException"/>, as a refusal by the loop is; callers that must tell "the node is going away"
/// from a refusal of the work itself catch this type.
/// </summary>
public sealed class NodeStoppedException(string message) : InvalidOperationException(message);
