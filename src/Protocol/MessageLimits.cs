using Google.Protobuf;

namespace Dcache.Protocol;

/// <summary>
/// The gRPC message size limit that nodes and gateways share (Dcache:Node:MaxMessageBytes and
/// Dcache:Gateway:Cluster:MaxMessageBytes), and how batches are cut to fit in it: a batch message that outgrew the
/// limit would be refused by the receiver, and the refusal would break the whole stream with every command on it.
/// </summary>
public static class MessageLimits
{
    /// <summary>The default limit: 16 MiB.</summary>
    public const int DefaultMaxMessageBytes = 16 * 1024 * 1024;

    /// <summary>Room kept for what a message carries besides its items (Raft message fields, batch framing).</summary>
    public const int HeaderRoomBytes = 64 * 1024;

    /// <summary>
    /// The smallest limit a node or gateway accepts: twice the header room, so that an item may be as large as the
    /// headers. Below the header room no message could carry anything.
    /// </summary>
    public const int MinMaxMessageBytes = 2 * HeaderRoomBytes;

    /// <summary>
    /// The largest limit a node or gateway accepts: an item of 512 MiB (Redis's largest string, and the largest key or
    /// value a cache snapshot reads back) plus the header room. A larger limit would let a write store a value that
    /// every later snapshot would fail to load.
    /// </summary>
    public const int MaxMaxMessageBytes = (512 * 1024 * 1024) + HeaderRoomBytes;

    /// <summary>The largest single item (a command, a reply, a log entry) that still fits in one message.</summary>
    public static int MaxItemBytes(int maxMessageBytes) => Math.Max(1, maxMessageBytes - HeaderRoomBytes);

    /// <summary>The bytes <paramref name="item"/> adds to a batch message as one element of a repeated field.</summary>
    public static int FramedSize(IMessage item) => 1 + CodedOutputStream.ComputeMessageSize(item);
}
