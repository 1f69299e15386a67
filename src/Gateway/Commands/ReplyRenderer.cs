using System.Buffers;
using Dcache.Gateway.Resp;
using Dcache.Protocol.Cache;
using Google.Protobuf.Collections;

namespace Dcache.Gateway.Commands;

/// <summary>Writes a reply (from the cluster or from the gateway itself) as RESP2 or RESP3.</summary>
internal static class ReplyRenderer
{
    /// <param name="itemShapes">For an array (EXEC's), how each item renders; null when they render as <paramref name="shape"/> says.</param>
    public static void Write(IBufferWriter<byte> output, Reply reply, ReplyShape shape, RespProtocol protocol, bool isWrite, ReplyShape[]? itemShapes = null)
    {
        switch (reply.ResultCase)
        {
            case Reply.ResultOneofCase.Ok when shape == ReplyShape.OkAsOne:
                RespWriter.WriteInteger(output, 1);
                break;
            case Reply.ResultOneofCase.Nil when shape == ReplyShape.OkAsOne:
                RespWriter.WriteInteger(output, 0);
                break;
            case Reply.ResultOneofCase.Ok:
                RespWriter.WriteOk(output);
                break;
            case Reply.ResultOneofCase.Nil when shape == ReplyShape.NilArray:
                RespWriter.WriteNullArray(output, protocol);
                break;
            case Reply.ResultOneofCase.Nil:
                RespWriter.WriteNull(output, protocol);
                break;
            case Reply.ResultOneofCase.Integer:
                RespWriter.WriteInteger(output, reply.Integer);
                break;
            case Reply.ResultOneofCase.Bulk:
                switch (shape)
                {
                    case ReplyShape.Status:
                        RespWriter.WriteSimpleString(output, reply.Bulk.Span);
                        break;
                    case ReplyShape.Verbatim:
                        RespWriter.WriteVerbatimText(output, reply.Bulk.Span, protocol);
                        break;
                    default:
                        RespWriter.WriteBulk(output, reply.Bulk.Span);
                        break;
                }

                break;
            case Reply.ResultOneofCase.Array when itemShapes is not null && itemShapes.Length == reply.Array.Items.Count:
                RespWriter.WriteArrayHeader(output, itemShapes.Length);
                for (var i = 0; i < itemShapes.Length; i++)
                {
                    // A failure among EXEC's items is the transaction's outcome: a write's, whatever the item's command.
                    Write(output, reply.Array.Items[i], itemShapes[i], protocol, isWrite);
                }

                break;
            case Reply.ResultOneofCase.Array:
                WriteArray(output, reply.Array, shape, protocol, isWrite);
                break;
            case Reply.ResultOneofCase.Error:
                RespWriter.WriteError(output, string.IsNullOrEmpty(reply.Error) ? "ERR" : reply.Error);
                break;
            case Reply.ResultOneofCase.Failure:
                RespWriter.WriteError(output, ClusterErrors.Describe(reply.Failure, isWrite));
                break;
            default:
                RespWriter.WriteError(output, ClusterErrors.Describe(new Failure { Kind = FailureKind.FailureUnspecified, Message = "empty reply" }, isWrite));
                break;
        }
    }

    /// <summary>Bytes the reply will take at most beyond small headers (for the output buffer limit).</summary>
    public static long EstimateSize(Reply reply) => reply.ResultCase switch
    {
        Reply.ResultOneofCase.Bulk => reply.Bulk.Length + 16,
        Reply.ResultOneofCase.Array => EstimateArray(reply.Array),
        Reply.ResultOneofCase.Error => reply.Error.Length + 3,
        _ => 24,
    };

    private static long EstimateArray(ArrayReply array)
    {
        long size = 16;
        foreach (var item in array.Items)
        {
            size += EstimateSize(item);
        }

        return size;
    }

    /// <summary>An array of command descriptions or nils (the fields are those of ServerCommands.Describe).</summary>
    private static void WriteCommandDescriptions(IBufferWriter<byte> output, RepeatedField<Reply> descriptions, RespProtocol protocol)
    {
        RespWriter.WriteArrayHeader(output, descriptions.Count);
        foreach (var description in descriptions)
        {
            if (description.ResultCase != Reply.ResultOneofCase.Array)
            {
                Write(output, description, ReplyShape.Default, protocol, isWrite: false);
                continue;
            }

            var fields = description.Array.Items;
            RespWriter.WriteArrayHeader(output, fields.Count);
            for (var i = 0; i < fields.Count; i++)
            {
                switch (i)
                {
                    case CommandDescriptionFields.Flags or CommandDescriptionFields.AclCategories:
                        WriteSet(output, fields[i].Array.Items, ReplyShape.Status, protocol);
                        break;
                    case CommandDescriptionFields.Tips or CommandDescriptionFields.KeySpecs:
                        WriteSet(output, fields[i].Array.Items, ReplyShape.Default, protocol);
                        break;
                    case CommandDescriptionFields.Subcommands:
                        WriteCommandDescriptions(output, fields[i].Array.Items, protocol);
                        break;
                    default:
                        Write(output, fields[i], ReplyShape.Default, protocol, isWrite: false);
                        break;
                }
            }
        }
    }

    private static void WriteSet(IBufferWriter<byte> output, RepeatedField<Reply> members, ReplyShape memberShape, RespProtocol protocol)
    {
        RespWriter.WriteSetHeader(output, members.Count, protocol);
        foreach (var member in members)
        {
            Write(output, member, memberShape, protocol, isWrite: false);
        }
    }

    private static void WriteArray(IBufferWriter<byte> output, ArrayReply array, ReplyShape shape, RespProtocol protocol, bool isWrite)
    {
        var items = array.Items;
        switch (shape)
        {
            case ReplyShape.Map:
                RespWriter.WriteMapHeader(output, items.Count / 2, protocol);
                break;
            case ReplyShape.StatusLines:
                RespWriter.WriteArrayHeader(output, items.Count);
                foreach (var line in items)
                {
                    Write(output, line, ReplyShape.Status, protocol, isWrite);
                }

                return;
            case ReplyShape.CommandDescriptions:
                WriteCommandDescriptions(output, items, protocol);
                return;
            case ReplyShape.PushSequence:
                // Each item is a complete push of its own (one per channel for SUBSCRIBE a b).
                foreach (var push in items)
                {
                    RespWriter.WritePushHeader(output, push.Array.Items.Count, protocol);
                    foreach (var item in push.Array.Items)
                    {
                        Write(output, item, ReplyShape.Default, protocol, isWrite);
                    }
                }

                return;
            default:
                RespWriter.WriteArrayHeader(output, items.Count);
                break;
        }

        foreach (var item in items)
        {
            Write(output, item, ReplyShape.Default, protocol, isWrite);
        }
    }
}
