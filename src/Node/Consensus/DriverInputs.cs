using Dcache.Storage;
using Dcache.Raft;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>Everything that reaches the Raft driver loop goes through one channel as one of these.</summary>
internal abstract record DriverInput;

internal sealed record TickInput : DriverInput
{
    public static TickInput Instance { get; } = new();
}

/// <summary>A peer's message; a ReadIndex response may carry the leader's time it answered at (0: none).</summary>
internal sealed record PeerMessageInput(Message Message, long ReadTimeMs = 0) : DriverInput;

internal sealed record PeerUnreachableInput(ulong Peer) : DriverInput;

internal sealed record SnapshotSentInput(ulong Peer, ulong Term, bool Succeeded) : DriverInput;

/// <summary>A snapshot fully received and stored; the driver steps its message.</summary>
internal sealed record SnapshotReceivedInput(Message Message) : DriverInput;

/// <summary>A local snapshot is durable in the store (null: taking it failed).</summary>
internal sealed record SnapshotPersistedInput(SnapshotMetadata? Metadata, StorageWriteException? Failure = null) : DriverInput;

/// <summary>
/// The state of a snapshot from the leader, built on the thread pool (<see cref="Cache"/>), or why it could not be
/// (<see cref="Error"/>); the driver swaps it in and finishes the Ready that brought the snapshot.
/// </summary>
internal sealed record SnapshotBuiltInput(SnapshotMetadata Metadata, Dcache.Cache.CacheStateMachine? Cache, Exception? Error) : DriverInput;

/// <summary>A command and where its reply goes; <paramref name="DeadlineMs"/> is on the driver's monotonic clock.</summary>
internal sealed record CommandInput(Proto.Command Command, IReplySink Replies, long DeadlineMs) : DriverInput;

/// <summary>Work to run on the loop, where the core and the state machine may be touched; it completes its own task.</summary>
internal sealed record LoopWorkInput(Action<RaftNode> Run, Action<Exception> Fail) : DriverInput;


/// <summary>
/// Where the reply to a command goes. The driver completes each command exactly once, on its loop (or on the caller's
/// thread when the loop has stopped, or, for KEYS, on the thread-pool thread that built its reply), so an implementation
/// must be thread-safe, cheap, and must not block. A command stream passes
/// one sink for all its commands: no task or continuation per command.
/// </summary>
public interface IReplySink
{
    void Complete(Proto.Reply reply);

    /// <summary>
    /// True once no reply can reach the sender any more (its stream closed): work still to do for its commands is
    /// dropped. A reply is still due to <see cref="Complete"/>, which may discard it.
    /// </summary>
    bool Abandoned => false;
}

/// <summary>A reply as a task, for callers that await one command.</summary>
internal sealed class TaskReplySink() : TaskCompletionSource<Proto.Reply>(TaskCreationOptions.RunContinuationsAsynchronously), IReplySink
{
    // Continuations run on the thread pool, never on the driver loop that completes the task.
    public void Complete(Proto.Reply reply) => TrySetResult(reply);
}
