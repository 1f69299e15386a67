using Dcache.Protocol.Cache;
using Google.Protobuf;

namespace Dcache.Gateway.Commands;

/// <summary>How a reply's value is rendered where RESP2 and RESP3 (or Redis's commands) differ.</summary>
internal enum ReplyShape : byte
{
    /// <summary>Nil, integer, bulk, array, error as they are.</summary>
    Default,

    /// <summary>A bulk that is a status word: "+PONG".</summary>
    Status,

    /// <summary>An array of key, value, key, value...: a map in RESP3, the flat array in RESP2 (HELLO, CONFIG GET).</summary>
    Map,

    /// <summary>A bulk of text: a verbatim string "txt:" in RESP3 (INFO, CLIENT INFO).</summary>
    Verbatim,

    /// <summary>An array of replies each sent as its own push (SUBSCRIBE a b sends two confirmations).</summary>
    PushSequence,

    /// <summary>SETNX: "+OK" becomes 1 and nil becomes 0.</summary>
    OkAsOne,

    /// <summary>An array of status words: the lines of a HELP subcommand, which Redis sends as simple strings.</summary>
    StatusLines,

    /// <summary>
    /// COMMAND and COMMAND INFO: an array of command descriptions (or nils) laid out as ServerCommands describes them,
    /// rendered as Redis 7.0 renders them: flags and ACL categories as sets of status words, tips and key specs as sets,
    /// subcommands as descriptions again.
    /// </summary>
    CommandDescriptions,

    /// <summary>EXEC's array: its nil (a watched key changed, nothing applied) is the nil array, *-1 in RESP2.</summary>
    NilArray,
}

/// <summary>
/// A command's reply, known now or still running in the cluster. Replies are written in request order, so a reply
/// that is ready waits for the ones before it. <see cref="ItemShapes"/>: EXEC's array, each item rendered as its own
/// command renders it.
/// </summary>
internal readonly record struct PendingReply(
    Reply? Immediate,
    Task<Reply>? Pending,
    ReplyShape Shape = ReplyShape.Default,
    WriteSession? Session = null,
    bool IsWrite = false,
    bool CloseAfterReply = false,
    Command? SessionCommand = null,
    ReplyShape[]? ItemShapes = null)
{
    public static PendingReply Of(Reply reply, ReplyShape shape = ReplyShape.Default) => new(reply, null, shape);

    public static PendingReply Error(string message) => new(Replies.Error(message), null);
}

/// <summary>Reply values for commands the gateway answers itself. Shared instances are never mutated.</summary>
internal static class Replies
{
    public static readonly Reply Ok = new() { Ok = true };
    public static readonly Reply Nil = new() { Nil = true };
    public static readonly Reply Zero = new() { Integer = 0 };
    public static readonly Reply One = new() { Integer = 1 };
    public static readonly Reply EmptyArray = new() { Array = new ArrayReply() };
    public static readonly Reply Pong = Bulk("PONG");

    public static Reply Integer(long value) => value switch
    {
        0 => Zero,
        1 => One,
        _ => new Reply { Integer = value },
    };

    public static Reply Bulk(string text) => new() { Bulk = ByteString.CopyFromUtf8(text) };

    public static Reply Bulk(ReadOnlySpan<byte> bytes) => new() { Bulk = ByteString.CopyFrom(bytes) };

    public static Reply Error(string message) => new() { Error = message };

    public static Reply Array(params ReadOnlySpan<Reply> items)
    {
        var array = new ArrayReply();
        foreach (var item in items)
        {
            array.Items.Add(item);
        }

        return new Reply { Array = array };
    }

    public static Reply Array(List<Reply> items)
    {
        var array = new ArrayReply();
        array.Items.AddRange(items);
        return new Reply { Array = array };
    }
}
