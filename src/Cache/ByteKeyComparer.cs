using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Dcache.Cache;

/// <summary>
/// Compares byte-string keys by content, and lets the dictionary be probed with a <see cref="ReadOnlySpan{T}"/> so that a
/// lookup straight from an entry or a request buffer allocates nothing (an alternate-key lookup).
/// </summary>
/// <remarks>
/// Hashing is SipHash-1-3 under a 128-bit key drawn from the OS's cryptographic generator per comparer: clients choose
/// the keys, and an unkeyed or predictable hash would let them craft many keys in one bucket and turn every lookup linear
/// (HashDoS). The hash is purely local — it only decides bucket placement — and never influences what the state machine
/// applies, because the state machine never iterates the dictionary when deciding anything replicated.
/// </remarks>
internal sealed class ByteKeyComparer : IEqualityComparer<byte[]>, IAlternateEqualityComparer<ReadOnlySpan<byte>, byte[]>
{
    private readonly ulong _k0;
    private readonly ulong _k1;

    private ByteKeyComparer(ulong k0, ulong k1)
    {
        _k0 = k0;
        _k1 = k1;
    }

    public static ByteKeyComparer CreateRandomized()
    {
        Span<byte> key = stackalloc byte[16];
        RandomNumberGenerator.Fill(key);
        return new ByteKeyComparer(BinaryPrimitives.ReadUInt64LittleEndian(key), BinaryPrimitives.ReadUInt64LittleEndian(key[8..]));
    }

    public bool Equals(byte[]? x, byte[]? y)
    {
        if (ReferenceEquals(x, y))
        {
            return true;
        }

        return x is not null && y is not null && x.AsSpan().SequenceEqual(y);
    }

    public int GetHashCode(byte[] obj) => Hash(obj);

    public bool Equals(ReadOnlySpan<byte> alternate, byte[] other) => alternate.SequenceEqual(other);

    public int GetHashCode(ReadOnlySpan<byte> alternate) => Hash(alternate);

    public byte[] Create(ReadOnlySpan<byte> alternate) => alternate.ToArray();

    private int Hash(ReadOnlySpan<byte> key)
    {
        var hash = SipHash.Hash13(_k0, _k1, key);
        return (int)(hash ^ (hash >> 32));
    }
}
