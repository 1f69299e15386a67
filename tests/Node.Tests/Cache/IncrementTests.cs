using Dcache.Cache;
using static Dcache.Node.Tests.Cache.Replies;

namespace Dcache.Node.Tests.Cache;

public sealed class IncrementTests
{
    [Fact]
    public void Incrby_on_absent_key_starts_from_zero()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(5), cache.IncrementBy("n", 5));
        Assert.Equal(Int(4), cache.IncrementBy("n", -1));
        Assert.Equal(Int(-6), cache.IncrementBy("n", -10));
        Assert.Equal("-6", cache.Get("n"));
    }

    [Fact]
    public void Incrby_keeps_the_ttl()
    {
        var cache = new CacheHarness();
        cache.SetExpiringIn("n", "10", 5_000);
        cache.IncrementBy("n", 1);
        Assert.Equal(5_000, cache.Pttl("n"));
        Assert.Equal("11", cache.Get("n"));
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("+1")]
    [InlineData("01")]
    [InlineData("-0")]
    [InlineData("-")]
    [InlineData("1.0")]
    [InlineData("1e3")]
    [InlineData("9223372036854775808")]
    [InlineData("-9223372036854775809")]
    [InlineData("99999999999999999999")]
    [InlineData("000000000000000000001")]
    public void Incrby_on_a_value_that_is_not_a_strict_64_bit_integer_fails_and_changes_nothing(string value)
    {
        var cache = new CacheHarness();
        cache.Set("n", value);
        Assert.Equal(Error(CacheErrors.NotAnInteger), cache.IncrementBy("n", 1));
        Assert.Equal(value, cache.Get("n"));
    }

    [Theory]
    [InlineData("0", 0)]
    [InlineData("-1", -1)]
    [InlineData("9223372036854775807", long.MaxValue)]
    [InlineData("-9223372036854775808", long.MinValue)]
    [InlineData("1234567890", 1234567890)]
    public void Incrby_accepts_every_value_redis_accepts(string value, long parsed)
    {
        var cache = new CacheHarness();
        cache.Set("n", value);
        Assert.Equal(Int(parsed), cache.IncrementBy("n", 0));
    }

    [Fact]
    public void Incrby_overflow_fails_in_both_directions_and_changes_nothing()
    {
        var cache = new CacheHarness();
        cache.Set("max", long.MaxValue.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(Error(CacheErrors.IncrementOverflow), cache.IncrementBy("max", 1));
        Assert.Equal(Int(long.MaxValue - 1), cache.IncrementBy("max", -1));

        cache.Set("min", long.MinValue.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(Error(CacheErrors.IncrementOverflow), cache.IncrementBy("min", -1));
        Assert.Equal(Int(-1), cache.IncrementBy("min", long.MaxValue));

        cache.Set("one", "-1");
        Assert.Equal(Int(long.MinValue), cache.IncrementBy("one", long.MinValue + 1));
        Assert.Equal(Error(CacheErrors.IncrementOverflow), cache.IncrementBy("one", -1));
    }

    [Fact]
    public void Incrby_result_text_is_what_a_later_incrby_parses()
    {
        var cache = new CacheHarness();
        Assert.Equal(Int(long.MinValue), cache.IncrementBy("n", long.MinValue));
        Assert.Equal("-9223372036854775808", cache.Get("n"));
        Assert.Equal(Int(long.MinValue + 1), cache.IncrementBy("n", 1));
    }
}
