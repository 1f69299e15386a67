using System.Text;
using Dcache.Cache;

namespace Dcache.Node.Tests.Cache;

public sealed class HashingAndParsingTests
{
    private const ulong K0 = 0x0706050403020100;
    private const ulong K1 = 0x0F0E0D0C0B0A0908;

    private static byte[] Sequential(int length) => Enumerable.Range(0, length).Select(i => (byte)i).ToArray();

    [Fact]
    public void SipHash_2_4_matches_the_reference_vectors()
    {
        // From the SipHash paper (key 00..0f, message 00..len-1) and the reference implementation's vector table.
        Assert.Equal(0x726FDB47DD0E0E31UL, SipHash.Hash24(K0, K1, []));
        Assert.Equal(0x74F839C593DC67FDUL, SipHash.Hash24(K0, K1, Sequential(1)));
        Assert.Equal(0x93F5F5799A932462UL, SipHash.Hash24(K0, K1, Sequential(8)));
        Assert.Equal(0xA129CA6149BE45E5UL, SipHash.Hash24(K0, K1, Sequential(15)));
    }

    [Fact]
    public void Key_comparer_matches_by_content_and_spans_find_array_keys()
    {
        var comparer = ByteKeyComparer.CreateRandomized();
        var a = Encoding.UTF8.GetBytes("some key");
        var b = Encoding.UTF8.GetBytes("some key");
        Assert.True(comparer.Equals(a, b));
        Assert.Equal(comparer.GetHashCode(a), comparer.GetHashCode(b));
        Assert.Equal(comparer.GetHashCode(a), comparer.GetHashCode((ReadOnlySpan<byte>)b));
        Assert.False(comparer.Equals(a, Encoding.UTF8.GetBytes("some kez")));

        var dictionary = new Dictionary<byte[], int>(comparer) { [a] = 1 };
        Assert.True(dictionary.GetAlternateLookup<ReadOnlySpan<byte>>().TryGetValue("some key"u8, out var found));
        Assert.Equal(1, found);
    }

    [Fact]
    public void Each_comparer_has_its_own_hash_key()
    {
        // Hash placement must not be predictable across processes (HashDoS); two comparers disagree on nearly every key.
        var first = ByteKeyComparer.CreateRandomized();
        var second = ByteKeyComparer.CreateRandomized();
        var differing = Enumerable.Range(0, 64).Count(i => first.GetHashCode(Sequential(i)) != second.GetHashCode(Sequential(i)));
        Assert.True(differing > 60, $"only {differing} of 64 hashes differ");
    }

    [Theory]
    [InlineData("0", true, 0L)]
    [InlineData("7", true, 7L)]
    [InlineData("-7", true, -7L)]
    [InlineData("9223372036854775807", true, long.MaxValue)]
    [InlineData("-9223372036854775808", true, long.MinValue)]
    [InlineData("18446744073709551615", false, 0L)]
    [InlineData("18446744073709551616", false, 0L)]
    [InlineData("00", false, 0L)]
    [InlineData("-", false, 0L)]
    [InlineData("- 1", false, 0L)]
    [InlineData("1a", false, 0L)]
    [InlineData("\u0661", false, 0L)]
    public void Integer_parsing_is_as_strict_as_redis(string text, bool valid, long expected)
    {
        Assert.Equal(valid, IntegerFormat.TryParseStrict(Encoding.UTF8.GetBytes(text), out var value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(long.MaxValue)]
    [InlineData(long.MinValue)]
    public void Formatted_integers_parse_back(long value)
    {
        Assert.True(IntegerFormat.TryParseStrict(IntegerFormat.Format(value), out var parsed));
        Assert.Equal(value, parsed);
    }
}
