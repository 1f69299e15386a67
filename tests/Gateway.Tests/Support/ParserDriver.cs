using System.Buffers;
using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Tests.Support;

/// <summary>
/// Feeds bytes to a <see cref="RespParser"/> the way the connection loop does: whatever has not been consumed stays
/// at the front of the next buffer. Buffers can be split into many segments to exercise multi-segment sequences.
/// </summary>
internal sealed class ParserDriver(RespOptions? options = null, int segmentSize = int.MaxValue)
{
    private byte[] _unconsumed = [];

    public RespParser Parser { get; } = new(options ?? new RespOptions());

    public List<string[]> Requests { get; } = [];

    public string? Error { get; private set; }

    /// <summary>Bytes received but not yet consumed by the parser.</summary>
    public int Unconsumed => _unconsumed.Length;

    public ParserDriver Feed(string text) => Feed(System.Text.Encoding.Latin1.GetBytes(text));

    public ParserDriver Feed(ReadOnlySpan<byte> bytes)
    {
        var data = new byte[_unconsumed.Length + bytes.Length];
        _unconsumed.CopyTo(data, 0);
        bytes.CopyTo(data.AsSpan(_unconsumed.Length));
        var buffer = Segments.Of(data, segmentSize);
        while (Error is null)
        {
            var status = Parser.TryParse(ref buffer, out var request);
            if (status == RespParseStatus.Request)
            {
                Requests.Add(ToStrings(request!));
                continue;
            }

            if (status == RespParseStatus.ProtocolError)
            {
                Error = Parser.Error;
            }

            break;
        }

        _unconsumed = buffer.ToArray();
        return this;
    }

    public static string[] ToStrings(RespRequest request)
    {
        var result = new string[request.Count];
        for (var i = 0; i < request.Count; i++)
        {
            result[i] = request.Text(i);
        }

        return result;
    }
}

/// <summary>Builds ReadOnlySequences of several segments.</summary>
internal static class Segments
{
    public static ReadOnlySequence<byte> Of(byte[] data, int segmentSize)
    {
        if (data.Length <= segmentSize)
        {
            return new ReadOnlySequence<byte>(data);
        }

        Segment? first = null;
        Segment? last = null;
        for (var offset = 0; offset < data.Length; offset += segmentSize)
        {
            var memory = data.AsMemory(offset, Math.Min(segmentSize, data.Length - offset));
            if (first is null)
            {
                first = last = new Segment(memory, 0);
            }
            else
            {
                last = last!.Append(memory);
            }
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    /// <summary>A sequence split exactly at the given offsets.</summary>
    public static ReadOnlySequence<byte> SplitAt(byte[] data, params int[] cuts)
    {
        var start = 0;
        Segment? first = null;
        Segment? last = null;
        foreach (var cut in cuts.Append(data.Length))
        {
            var memory = data.AsMemory(start, cut - start);
            start = cut;
            if (first is null)
            {
                first = last = new Segment(memory, 0);
            }
            else
            {
                last = last!.Append(memory);
            }
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
