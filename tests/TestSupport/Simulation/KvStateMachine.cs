using System.Buffers.Binary;
using System.Text;

namespace Dcache.TestSupport.Simulation;

/// <summary>A client write as it travels through the Raft log: put <see cref="Value"/> under <see cref="Key"/>.</summary>
public readonly record struct KvCommand(string Key, string Value)
{
    private const byte PutTag = 1;

    public byte[] Encode()
    {
        var keyBytes = Encoding.UTF8.GetBytes(Key);
        var valueBytes = Encoding.UTF8.GetBytes(Value);
        var buffer = new byte[1 + 2 + keyBytes.Length + valueBytes.Length];
        buffer[0] = PutTag;
        BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(1), checked((ushort)keyBytes.Length));
        keyBytes.CopyTo(buffer.AsSpan(3));
        valueBytes.CopyTo(buffer.AsSpan(3 + keyBytes.Length));
        return buffer;
    }

    public static KvCommand Decode(ReadOnlySpan<byte> data)
    {
        if (data.Length < 3 || data[0] != PutTag)
        {
            throw new FormatException($"not a key-value command ({data.Length} bytes)");
        }

        var keyLength = BinaryPrimitives.ReadUInt16LittleEndian(data[1..]);
        if (3 + keyLength > data.Length)
        {
            throw new FormatException("key-value command truncated");
        }

        return new KvCommand(
            Encoding.UTF8.GetString(data.Slice(3, keyLength)),
            Encoding.UTF8.GetString(data[(3 + keyLength)..]));
    }
}

/// <summary>
/// The replicated state machine of the simulation: a string map. Deterministic by construction (sorted map,
/// no clock), so replicas that applied the same entries serialize to identical bytes.
/// </summary>
public sealed class KvStateMachine
{
    private readonly SortedDictionary<string, string> _values = new(StringComparer.Ordinal);

    public int Count => _values.Count;

    public string? Get(string key) => _values.TryGetValue(key, out var value) ? value : null;

    public void Apply(KvCommand command) => _values[command.Key] = command.Value;

    /// <summary>Applies one committed log entry's payload: empty payloads are the leaders' no-ops.</summary>
    public void ApplyEntryData(ReadOnlySpan<byte> data)
    {
        if (!data.IsEmpty)
        {
            Apply(KvCommand.Decode(data));
        }
    }

    public byte[] Serialize()
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(_values.Count);
            foreach (var (key, value) in _values)
            {
                writer.Write(key);
                writer.Write(value);
            }
        }

        return stream.ToArray();
    }

    public static KvStateMachine Deserialize(ReadOnlyMemory<byte> data)
    {
        var machine = new KvStateMachine();
        if (data.IsEmpty)
        {
            return machine;
        }

        using var stream = new MemoryStream(data.ToArray(), writable: false);
        using var reader = new BinaryReader(stream, Encoding.UTF8);
        var count = reader.ReadInt32();
        for (var i = 0; i < count; i++)
        {
            var key = reader.ReadString();
            machine._values[key] = reader.ReadString();
        }

        return machine;
    }

    public override string ToString() => "{" + string.Join(", ", _values.Select(kv => $"{kv.Key}={kv.Value}")) + "}";
}
