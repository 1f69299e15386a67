using System.Text;
using Google.Protobuf;

namespace Dcache.Gateway.Resp;

/// <summary>
/// One parsed command: its arguments, copied once out of the connection's input into a buffer this request owns.
/// The buffer is never reused or written again, so its slices can back protobuf ByteStrings without a second copy
/// and stay valid however long the cluster client holds them.
/// </summary>
public sealed class RespRequest
{
    private readonly byte[] _data;

    // Argument i is _data[_offsets[i] .. _offsets[i + 1]).
    private readonly int[] _offsets;

    internal RespRequest(byte[] data, int[] offsets, int count)
    {
        _data = data;
        _offsets = offsets;
        Count = count;
    }

    /// <summary>Number of arguments, the command name included.</summary>
    public int Count { get; }

    public ReadOnlySpan<byte> this[int index] => _data.AsSpan(_offsets[index], Length(index));

    public int Length(int index)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)Count, nameof(index));
        return _offsets[index + 1] - _offsets[index];
    }

    /// <summary>Total bytes of all arguments.</summary>
    public int TotalLength => _offsets[Count] - _offsets[0];

    public ReadOnlyMemory<byte> Memory(int index) => _data.AsMemory(_offsets[index], Length(index));

    /// <summary>The argument as a ByteString over this request's own buffer (no copy; see the class remarks).</summary>
    public ByteString ByteString(int index) => UnsafeByteOperations.UnsafeWrap(Memory(index));

    /// <summary>The argument as text, byte for byte (Latin-1), for names, options and error messages.</summary>
    public string Text(int index) => Encoding.Latin1.GetString(this[index]);

    /// <summary>
    /// The argument as text up to its first NUL byte: what C's <c>%s</c> prints of it, so what Redis quotes of an option in an
    /// error ("Unsupported option %s").
    /// </summary>
    public string TextUpToNul(int index) => Encoding.Latin1.GetString(UpToNul(this[index]));

    /// <summary>
    /// The bytes before the first NUL: what C's string functions (Redis's <c>strcasecmp</c> on options) see of an argument,
    /// so that Redis takes "nx\0zz" for NX.
    /// </summary>
    public static ReadOnlySpan<byte> UpToNul(ReadOnlySpan<byte> argument)
    {
        var nul = argument.IndexOf((byte)0);
        return nul < 0 ? argument : argument[..nul];
    }

    /// <summary>Builds a request from literal arguments (tests and synthetic commands).</summary>
    public static RespRequest FromArguments(params ReadOnlySpan<byte[]> arguments)
    {
        var total = 0;
        foreach (var argument in arguments)
        {
            total += argument.Length;
        }

        var data = new byte[total];
        var offsets = new int[arguments.Length + 1];
        var position = 0;
        for (var i = 0; i < arguments.Length; i++)
        {
            offsets[i] = position;
            arguments[i].CopyTo(data, position);
            position += arguments[i].Length;
        }

        offsets[arguments.Length] = position;
        return new RespRequest(data, offsets, arguments.Length);
    }

    public override string ToString()
    {
        var builder = new StringBuilder();
        for (var i = 0; i < Count; i++)
        {
            builder.Append(i == 0 ? "" : " ").Append('"').Append(Text(i)).Append('"');
        }

        return builder.ToString();
    }
}
