using Dcache.Gateway.Cluster;
using Dcache.Protocol.Cache;

namespace Dcache.Gateway.Tests;

/// <summary>SCAN's arguments, checked and worded as Redis 7.0 checks them (the fixture is in KeyCommandTests.cs).</summary>
public sealed partial class KeyCommandTests
{
    [Fact]
    public async Task ScanSendsTheCursorAndItsOptionsAndRepliesWithTheNextCursorAndTheKeys()
    {
        await Run("MSET", "a", "1", "b", "2", "c", "3");
        Assert.Equal("*[$0, *[$a, $b, $c]]", await Run("SCAN", "0"));
        Assert.Equal((0UL, 10UL, "*"), (LastCommand.Scan.Cursor, LastCommand.Scan.Count, LastCommand.Scan.Pattern.ToStringUtf8()));
        Assert.Equal(ReadMode.Linearizable, _server.Cluster.Executed[^1].Mode);

        Assert.Equal("*[$2, *[$a, $b]]", await Run("scan", "0", "count", "2"));
        Assert.Equal("*[$0, *[$c]]", await Run("SCAN", "2", "COUNT", "2"));
        Assert.Equal("*[$0, *[$b]]", await Run("SCAN", "0", "MATCH", "[b]", "Count", "5"));
        Assert.Equal((5UL, "[b]"), (LastCommand.Scan.Count, LastCommand.Scan.Pattern.ToStringUtf8()));

        // A repeated option's last value wins, as in Redis.
        await Run("SCAN", "0", "MATCH", "x", "COUNT", "1", "MATCH", "y*", "COUNT", "7");
        Assert.Equal((7UL, "y*"), (LastCommand.Scan.Count, LastCommand.Scan.Pattern.ToStringUtf8()));

        await Run("READONLY");
        await Run("SCAN", "0");
        Assert.Equal(ReadMode.Local, _server.Cluster.Executed[^1].Mode);
    }

    [Theory]
    [InlineData("18446744073709551615", ulong.MaxValue)] // any 64-bit cursor goes to the cluster, which says where it leads
    [InlineData("007", 7UL)]
    [InlineData("+7", 7UL)] // and the rest as C's strtoul reads it, as in Redis 7.0
    [InlineData("-1", ulong.MaxValue)]
    [InlineData("-18446744073709551615", 1UL)]
    [InlineData("", 0UL)]
    [InlineData("12\0junk", 12UL)]
    public async Task ScanReadsTheCursorAsRedisDoes(string cursor, ulong expected)
    {
        await Run("SCAN", cursor);
        Assert.Equal(expected, LastCommand.Scan.Cursor);
    }

    [Theory]
    [InlineData("-ERR wrong number of arguments for 'scan' command", "SCAN")]
    [InlineData("-ERR invalid cursor", "SCAN", "x")]
    [InlineData("-ERR invalid cursor", "SCAN", "-")]
    [InlineData("-ERR invalid cursor", "SCAN", "+")]
    [InlineData("-ERR invalid cursor", "SCAN", " 1")]
    [InlineData("-ERR invalid cursor", "SCAN", "1 ")]
    [InlineData("-ERR invalid cursor", "SCAN", "0x10")]
    [InlineData("-ERR invalid cursor", "SCAN", "1.5")]
    [InlineData("-ERR invalid cursor", "SCAN", "18446744073709551616")]
    [InlineData("-ERR invalid cursor", "SCAN", "-18446744073709551616")]
    [InlineData("-ERR invalid cursor", "SCAN", "x", "COUNT", "x")]
    [InlineData("-ERR syntax error", "SCAN", "0", "COUNT")]
    [InlineData("-ERR syntax error", "SCAN", "0", "COUNT", "0")]
    [InlineData("-ERR syntax error", "SCAN", "0", "COUNT", "-5")]
    [InlineData("-ERR value is not an integer or out of range", "SCAN", "0", "COUNT", "ten")]
    [InlineData("-ERR value is not an integer or out of range", "SCAN", "0", "COUNT", "99999999999999999999")]
    [InlineData("-ERR syntax error", "SCAN", "0", "MATCH")]
    [InlineData("-ERR syntax error", "SCAN", "0", "TYPE")]
    [InlineData("-ERR syntax error", "SCAN", "0", "LIMIT", "5")]
    [InlineData("-ERR syntax error", "SCAN", "0", "COUNT", "5", "MATCH")]
    [InlineData("-ERR value is not an integer or out of range", "SCAN", "0", "COUNT", "x", "BOGUS")]
    public async Task ScanRefusesBadArgumentsWithoutAskingTheCluster(string expected, params string[] request)
    {
        Assert.Equal(expected, await Run(request));
        Assert.Empty(_server.Cluster.Executed);
    }

    [Fact]
    public async Task ScanTypeStringFiltersNothingAndAnyOtherTypeMatchesNoKey()
    {
        await Run("MSET", "a", "1", "b", "2");
        var executed = _server.Cluster.Executed.Count;
        Assert.Equal("*[$0, *[$a, $b]]", await Run("SCAN", "0", "TYPE", "string"));
        Assert.Equal("*[$0, *[$a, $b]]", await Run("SCAN", "0", "type", "STRING", "MATCH", "*"));
        Assert.Equal(executed + 2, _server.Cluster.Executed.Count);

        // Every key is a string: the iteration is over at once, without a cluster round trip.
        foreach (var type in new[] { "list", "set", "zset", "hash", "stream", "none", "nonsense" })
        {
            Assert.Equal("*[$0, *[]]", await Run("SCAN", "0", "TYPE", type));
        }

        Assert.Equal("*[$0, *[]]", await Run("SCAN", "123", "COUNT", "3", "TYPE", "hash"));
        Assert.Equal(executed + 2, _server.Cluster.Executed.Count);
        await Run("HELLO", "3");
        Assert.Equal("*[$0, *[]]", await Run("SCAN", "0", "TYPE", "hash"));
    }

    [Fact]
    public async Task ScanOnANodeThatDoesNotKnowItSaysWhyInsteadOfInvalidRequest()
    {
        // What a node of a build before SCAN answers: the request has an operation it cannot read.
        _server.Cluster.Script = command => command.OpCase == Command.OpOneofCase.Scan
            ? new Reply { Failure = new Failure { Kind = FailureKind.InvalidRequest, Message = "command without an operation" } }
            : null;
        Assert.Equal(
            "-ERR SCAN needs every node on a build that has it (a rolling upgrade is in progress): command without an operation",
            await Run("SCAN", "0"));
        Assert.Equal("+OK", await Run("SET", "still", "works"));

        _server.Cluster.Script = command => command.OpCase == Command.OpOneofCase.Scan
            ? new Reply { Failure = new Failure { Kind = FailureKind.Unavailable, Message = "not applied: no leader" } }
            : null;
        Assert.StartsWith("-TRYAGAIN", await Run("SCAN", "0"), StringComparison.Ordinal);
    }
}
