using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// The leader's time on a ReadIndex answer: carried only there, and absent (not 0 by mistake) from a build that
/// predates it, so that a follower falls back to its own estimate rather than reading at the epoch.
/// </summary>
public sealed class ReadTimeWireTests
{
    private static Message Answer => new() { Type = MessageType.ReadIndexResponse, From = 1, To = 2, Term = 3, Context = 7, Index = 9 };

    [Fact]
    public void AReadIndexAnswerCarriesTheLeadersTime()
    {
        var wire = RaftMessageCodec.ToWire(Answer, null, readTimeMs: 1_750_000_000_123);
        var received = Wire.RaftMessage.Parser.ParseFrom(wire.ToByteArray());
        Assert.Equal(1_750_000_000_123, RaftMessageCodec.ReadTimeOf(received));
        var message = RaftMessageCodec.FromWire(received);
        Assert.Equal((MessageType.ReadIndexResponse, 7UL, 9UL), (message.Type, message.Context, message.Index));
    }

    [Fact]
    public void NoOtherMessageCarriesIt()
    {
        var heartbeat = new Message { Type = MessageType.Heartbeat, From = 1, To = 2, Term = 3 };
        Assert.False(RaftMessageCodec.ToWire(heartbeat, null, readTimeMs: 1_750_000_000_123).HasReadTimeMs);
    }

    [Fact]
    public void AnAnswerFromAnOlderBuildCarriesNone()
    {
        // What a leader from before the field sends: the same message, without field 18.
        var old = RaftMessageCodec.ToWire(Answer);
        var received = Wire.RaftMessage.Parser.ParseFrom(old.ToByteArray());
        Assert.False(received.HasReadTimeMs);
        Assert.Equal(0, RaftMessageCodec.ReadTimeOf(received));
    }
}
