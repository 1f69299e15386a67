using Dcache.Raft;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Consensus;

/// <summary>Everything that reaches the Raft driver loop goes through one channel as one of these.</summary>
internal abstract record DriverInput;

internal sealed record TickInput : DriverInput
{
    public static TickInput Instance { get; } = new();
}

internal sealed record PeerMessageInput(Message Message) : DriverInput;

internal sealed record PeerUnreachableInput(ulong Peer) : DriverInput;

internal sealed record SnapshotSentInput(ulong Peer, bool Succeeded) : DriverInput;

/// <summary>A snapshot fully received and stored; the driver steps its message.</summary>
internal sealed record SnapshotReceivedInput(Message Message) : DriverInput;

/// <summary>A local snapshot is durable in the store (null: taking it failed).</summary>
internal sealed record SnapshotPersistedInput(SnapshotMetadata? Metadata) : DriverInput;

internal sealed record CommandInput(Proto.Command Command, TaskCompletionSource<Proto.Reply> Completion, long DeadlineMs) : DriverInput;

internal sealed record AdminInput(Func<RaftNode, AdminOutcome> Action, TaskCompletionSource<AdminOutcome> Completion) : DriverInput;

/// <summary>The result of an operator's request run on the driver loop.</summary>
public sealed record AdminOutcome(bool Succeeded, string Message, ulong LeaderId = 0);
