using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace Dcache.Cache;

/// <summary>
/// SipHash (Aumasson and Bernstein), a keyed pseudo-random function built for hash tables that face untrusted keys:
/// without the 128-bit key an attacker cannot predict which keys collide, so cannot flood one bucket (HashDoS).
/// SipHash-1-3 is the variant Rust's standard HashMap uses; SipHash-2-4 (the paper's) is here to check the core against
/// the published test vectors.
/// </summary>
internal static class SipHash
{
    public static ulong Hash13(ulong k0, ulong k1, ReadOnlySpan<byte> data) => Compute(k0, k1, data, compressionRounds: 1, finalizationRounds: 3);

    public static ulong Hash24(ulong k0, ulong k1, ReadOnlySpan<byte> data) => Compute(k0, k1, data, compressionRounds: 2, finalizationRounds: 4);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Compute(ulong k0, ulong k1, ReadOnlySpan<byte> data, int compressionRounds, int finalizationRounds)
    {
        var v0 = k0 ^ 0x736f6d6570736575UL;
        var v1 = k1 ^ 0x646f72616e646f6dUL;
        var v2 = k0 ^ 0x6c7967656e657261UL;
        var v3 = k1 ^ 0x7465646279746573UL;

        var wholeWords = data.Length & ~7;
        for (var offset = 0; offset < wholeWords; offset += 8)
        {
            var m = BinaryPrimitives.ReadUInt64LittleEndian(data.Slice(offset, 8));
            v3 ^= m;
            for (var r = 0; r < compressionRounds; r++)
            {
                Round(ref v0, ref v1, ref v2, ref v3);
            }

            v0 ^= m;
        }

        // The last word: the remaining 0-7 bytes, little-endian, with the message length (mod 256) in the top byte.
        var last = (ulong)(byte)data.Length << 56;
        var tail = data[wholeWords..];
        for (var i = 0; i < tail.Length; i++)
        {
            last |= (ulong)tail[i] << (8 * i);
        }

        v3 ^= last;
        for (var r = 0; r < compressionRounds; r++)
        {
            Round(ref v0, ref v1, ref v2, ref v3);
        }

        v0 ^= last;
        v2 ^= 0xff;
        for (var r = 0; r < finalizationRounds; r++)
        {
            Round(ref v0, ref v1, ref v2, ref v3);
        }

        return v0 ^ v1 ^ v2 ^ v3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Round(ref ulong v0, ref ulong v1, ref ulong v2, ref ulong v3)
    {
        v0 += v1;
        v1 = BitOperations.RotateLeft(v1, 13);
        v1 ^= v0;
        v0 = BitOperations.RotateLeft(v0, 32);
        v2 += v3;
        v3 = BitOperations.RotateLeft(v3, 16);
        v3 ^= v2;
        v0 += v3;
        v3 = BitOperations.RotateLeft(v3, 21);
        v3 ^= v0;
        v2 += v1;
        v1 = BitOperations.RotateLeft(v1, 17);
        v1 ^= v2;
        v2 = BitOperations.RotateLeft(v2, 32);
    }
}
