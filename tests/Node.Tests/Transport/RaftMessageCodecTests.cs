using Dcache.Node.Transport;
using Google.Protobuf;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Tests.Transport;

/// <summary>
/// A Raft message from the wire is checked before the core sees it: entries that could not have come from a leader's
/// log (out of order, of a term the sender has not reached, of an unknown kind) would be written into this node's log as
/// they are. Each is refused with what is wrong with it.
/// </summary>
public sealed class RaftMessageCodecTests
{
    public static TheoryData<string, string> Malformed => new()
    {
        { "not contiguous", "entries are not contiguous after index 5" },
        { "term zero", "entry 6 has term 0 outside (0, 3]" },
        { "term ahead", "entry 6 has term 4 outside (0, 3]" },
        { "unknown type", "entry 6 has unknown type 9" },
        { "short change", "entry 6 is a malformed membership change" },
        { "no sender", "message without sender or receiver" },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void An_append_whose_entries_no_leader_could_have_sent_is_refused(string what, string reason)
    {
        var wire = new Wire.RaftMessage { Type = Wire.MessageType.Append, From = 1, To = 2, Term = 3, Index = 5, LogTerm = 3 };
        var entry = new Wire.Entry { Index = 6, Term = 3, Type = Wire.EntryType.Normal, Data = ByteString.CopyFromUtf8("x") };
        switch (what)
        {
            case "not contiguous":
                entry.Index = 7;
                break;
            case "term zero":
                entry.Term = 0;
                break;
            case "term ahead":
                entry.Term = 4;
                break;
            case "unknown type":
                entry.Type = (Wire.EntryType)9;
                break;
            case "short change":
                entry.Type = Wire.EntryType.ConfChange;
                break;
            case "no sender":
                wire.From = 0;
                break;
        }

        wire.Entries.Add(entry);

        var refusal = Assert.Throws<FormatException>(() => RaftMessageCodec.FromWire(wire));
        Assert.Equal(reason, refusal.Message);
    }

    [Fact]
    public void An_append_of_contiguous_entries_of_terms_up_to_the_senders_is_taken_as_it_is()
    {
        var wire = new Wire.RaftMessage { Type = Wire.MessageType.Append, From = 1, To = 2, Term = 3, Index = 5, LogTerm = 2, Commit = 6 };
        wire.Entries.Add(new Wire.Entry { Index = 6, Term = 2, Type = Wire.EntryType.Normal, Data = ByteString.CopyFromUtf8("a") });
        wire.Entries.Add(new Wire.Entry { Index = 7, Term = 3, Type = Wire.EntryType.Normal, Data = ByteString.CopyFromUtf8("b") });

        var message = RaftMessageCodec.FromWire(wire);

        Assert.Equal([(6UL, 2UL), (7UL, 3UL)], message.Entries.Select(e => (e.Index, e.Term)));
        Assert.Equal((1UL, 2UL, 3UL, 6UL), (message.From, message.To, message.Term, message.Commit));
    }
}
