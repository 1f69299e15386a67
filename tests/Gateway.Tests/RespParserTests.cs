using System.Buffers;
using System.Text;
using Dcache.Gateway.Resp;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Gateway.Tests;

public sealed class RespParserTests
{
    private static readonly string Stream =
        "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\nva\r\nl\0ue\xff\r\r\n" + // binary-safe value with CR, LF, NUL
        "PING\r\n" +
        "*0\r\n" +                                       // empty request: skipped
        "\r\n" +                                         // blank inline line: skipped
        "set  \"a b\" 'c d'\n" +                        // inline with quotes and a bare LF
        "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n" +            // empty argument
        "*1\r\n$4\r\nQUIT\r\n";

    private static readonly string[][] Expected =
    [
        ["SET", "key", "va\r\nl\0ue\xff\r"],
        ["PING"],
        ["set", "a b", "c d"],
        ["ECHO", ""],
        ["QUIT"],
    ];

    [Fact]
    public void ParsesMultibulkInlineAndEmptyRequests()
    {
        var driver = new ParserDriver().Feed(Stream);
        Assert.Null(driver.Error);
        Assert.Equal(Expected, driver.Requests);
        Assert.Equal(0, driver.Unconsumed);
    }

    [Fact]
    public void SplittingTheStreamAtEveryBytePositionGivesTheSameRequests()
    {
        var bytes = Encoding.Latin1.GetBytes(Stream);
        for (var split = 0; split <= bytes.Length; split++)
        {
            var driver = new ParserDriver().Feed(bytes.AsSpan(0, split)).Feed(bytes.AsSpan(split));
            Assert.Null(driver.Error);
            Assert.Equal(Expected, driver.Requests);
        }
    }

    [Fact]
    public void EveryPairOfSplitPointsGivesTheSameRequests()
    {
        var bytes = Encoding.Latin1.GetBytes(Stream);
        for (var first = 0; first <= bytes.Length; first += 3)
        {
            for (var second = first; second <= bytes.Length; second += 2)
            {
                var driver = new ParserDriver()
                    .Feed(bytes.AsSpan(0, first))
                    .Feed(bytes.AsSpan(first, second - first))
                    .Feed(bytes.AsSpan(second));
                Assert.Equal(Expected, driver.Requests);
            }
        }
    }

    [Fact]
    public void ByteByByteDripGivesTheSameRequests()
    {
        var bytes = Encoding.Latin1.GetBytes(Stream);
        var driver = new ParserDriver();
        foreach (var b in bytes)
        {
            driver.Feed([b]);
        }

        Assert.Null(driver.Error);
        Assert.Equal(Expected, driver.Requests);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void MultiSegmentBuffersGiveTheSameRequests(int segmentSize)
    {
        var driver = new ParserDriver(segmentSize: segmentSize).Feed(Stream);
        Assert.Null(driver.Error);
        Assert.Equal(Expected, driver.Requests);
    }

    [Fact]
    public void EverySegmentBoundaryInOneBufferGivesTheSameRequests()
    {
        var bytes = Encoding.Latin1.GetBytes(Stream);
        for (var cut = 1; cut < bytes.Length; cut++)
        {
            var parser = new RespParser(new RespOptions());
            var buffer = Segments.SplitAt(bytes, cut);
            var requests = new List<string[]>();
            while (parser.TryParse(ref buffer, out var request) == RespParseStatus.Request)
            {
                requests.Add(ParserDriver.ToStrings(request!));
            }

            Assert.Equal(Expected, requests);
            Assert.True(buffer.IsEmpty);
        }
    }

    [Fact]
    public void IncompleteRequestConsumesNothingBeforeItsHeaderCompletes()
    {
        var driver = new ParserDriver().Feed("*2\r\n$3\r\nGE");
        Assert.Empty(driver.Requests);
        Assert.True(driver.Parser.HasPartialRequest);
        driver.Feed("T\r\n$1\r\nk\r\n");
        Assert.Equal([["GET", "k"]], driver.Requests);
        Assert.False(driver.Parser.HasPartialRequest);
    }

    [Fact]
    public void LargeValueArrivingInChunksIsConsumedAsItArrives()
    {
        var value = new string('x', 1_000_000);
        var frame = Encoding.Latin1.GetBytes($"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${value.Length}\r\n{value}\r\n");
        var driver = new ParserDriver();
        for (var offset = 0; offset < frame.Length; offset += 4096)
        {
            driver.Feed(frame.AsSpan(offset, Math.Min(4096, frame.Length - offset)));

            // The transport never has to hold more than a chunk (plus a header line) of an argument's data.
            Assert.True(driver.Unconsumed < 4096 + 64, $"{driver.Unconsumed} bytes left unconsumed");
        }

        Assert.Single(driver.Requests);
        Assert.Equal(value, driver.Requests[0][2]);
    }

    [Theory]
    [InlineData("*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$01\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$2147483647\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length")]
    [InlineData("*x\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*+1\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*3000000000\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*99999999999999999999999\r\n", "ERR Protocol error: invalid multibulk length")]
    [InlineData("*2\r\n$3\r\nGET\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'")]
    [InlineData("*1\r\nGET\r\n", "ERR Protocol error: expected '$', got 'G'")]
    [InlineData("SET k \"unterminated\r\n", "ERR Protocol error: unbalanced quotes in request")]
    [InlineData("SET k \"a\"b\r\n", "ERR Protocol error: unbalanced quotes in request")]
    [InlineData("SET k 'a\r\n", "ERR Protocol error: unbalanced quotes in request")]
    public void ProtocolErrorsAreWordedAsRedisWordsThem(string input, string error)
    {
        var driver = new ParserDriver().Feed(input);
        Assert.Equal(error, driver.Error);
    }

    [Fact]
    public void ProtocolErrorIsReportedAfterTheRequestsBeforeIt()
    {
        var driver = new ParserDriver().Feed("PING\r\n*1\r\n$x\r\nPING\r\n");
        Assert.Equal([["PING"]], driver.Requests);
        Assert.Equal("ERR Protocol error: invalid bulk length", driver.Error);
    }

    [Fact]
    public void TooLongInlineLineIsRefused()
    {
        var driver = new ParserDriver(new RespOptions { MaxInlineLength = 1024 });
        driver.Feed(new string('a', 1024));
        Assert.Null(driver.Error);
        driver.Feed("a");
        Assert.Equal("ERR Protocol error: too big inline request", driver.Error);
    }

    [Fact]
    public void TooLongInlineLineIsRefusedAlsoWhenItsNewlineArrivesWithIt()
    {
        var options = new RespOptions { MaxInlineLength = 1024 };
        Assert.Equal([["ECHO", new string('a', 1019)]], new ParserDriver(options).Feed("ECHO " + new string('a', 1019) + "\r\n").Requests);
        Assert.Equal("ERR Protocol error: too big inline request", new ParserDriver(options).Feed("ECHO " + new string('a', 1020) + "\r\n").Error);
    }

    [Fact]
    public void AnInlineRequestIsHeldToTheArgumentLimits()
    {
        Assert.Equal("ERR Protocol error: invalid multibulk length", new ParserDriver(new RespOptions { MaxArguments = 4 }).Feed("a b c d e\r\n").Error);
        Assert.Equal([["a", "b", "c", "d"]], new ParserDriver(new RespOptions { MaxArguments = 4 }).Feed("a b c d\r\n").Requests);
    }

    [Fact]
    public void AnInlineRequestBeforeAuthIsNotHeldToTheUnauthenticatedArgumentLimit()
    {
        // Redis applies it to multibulk requests only: `SET a b c d e f g h i j k` typed before AUTH gets NOAUTH.
        var driver = new ParserDriver(new RespOptions());
        driver.Parser.AuthenticationRequired = true;
        Assert.Equal([["SET", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]], driver.Feed("SET a b c d e f g h i j k\r\n").Requests);
    }

    [Fact]
    public void TooLongHeaderLinesAreRefused()
    {
        var options = new RespOptions { MaxInlineLength = 64 };
        Assert.Equal("ERR Protocol error: too big mbulk count string", new ParserDriver(options).Feed("*" + new string('1', 80)).Error);
        Assert.Equal("ERR Protocol error: too big bulk count string", new ParserDriver(options).Feed("*1\r\n$" + new string('1', 80)).Error);
    }

    [Fact]
    public void ArgumentCountLimitIsEnforced()
    {
        var options = new RespOptions { MaxArguments = 4 };
        Assert.Null(new ParserDriver(options).Feed("*4\r\n").Error);
        Assert.Equal("ERR Protocol error: invalid multibulk length", new ParserDriver(options).Feed("*5\r\n").Error);
    }

    [Fact]
    public void RequestSizeLimitIsEnforced()
    {
        var options = new RespOptions { MaxRequestBytes = 10 };
        var driver = new ParserDriver(options).Feed("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$7\r\nvalue12\r\n");
        Assert.Equal("ERR Protocol error: request exceeds the query buffer limit", driver.Error);
        Assert.Empty(driver.Requests);
    }

    [Fact]
    public void UnauthenticatedConnectionsGetRedisTighterLimits()
    {
        var driver = new ParserDriver();
        driver.Parser.AuthenticationRequired = true;
        driver.Feed("*11\r\n");
        Assert.Equal("ERR Protocol error: unauthenticated multibulk length", driver.Error);

        driver = new ParserDriver();
        driver.Parser.AuthenticationRequired = true;
        driver.Feed("*1\r\n$16385\r\n");
        Assert.Equal("ERR Protocol error: unauthenticated bulk length", driver.Error);

        driver = new ParserDriver();
        driver.Parser.AuthenticationRequired = true;
        driver.Feed("*2\r\n$4\r\nAUTH\r\n$16384\r\n");
        Assert.Null(driver.Error);
    }

    [Fact]
    public void HugeDeclaredBulkLengthAllocatesNothingUntilTheBytesArrive()
    {
        // Raise the limit so the header is accepted: the parser must still not allocate what it announces.
        var parser = new RespParser(new RespOptions { MaxBulkLength = Array.MaxLength, MaxRequestBytes = Array.MaxLength });
        var buffer = new ReadOnlySequence<byte>("*1\r\n$2147483000\r\nabc"u8.ToArray());
        var before = GC.GetAllocatedBytesForCurrentThread();
        var status = parser.TryParse(ref buffer, out _);
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(RespParseStatus.Incomplete, status);
        Assert.True(allocated < 64 * 1024, $"allocated {allocated} bytes");
        Assert.True(parser.BufferedBytes < 64 * 1024, $"buffered {parser.BufferedBytes} bytes");
    }

    [Fact]
    public void MaximumBulkHeaderIsRefusedWithoutAllocating()
    {
        var parser = new RespParser(new RespOptions());
        var buffer = new ReadOnlySequence<byte>("*1\r\n$2147483647\r\n"u8.ToArray());
        var before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(RespParseStatus.ProtocolError, parser.TryParse(ref buffer, out _));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 * 1024);
    }

    [Fact]
    public void MillionArgumentHeaderDoesNotPreallocateSlots()
    {
        var parser = new RespParser(new RespOptions());
        var buffer = new ReadOnlySequence<byte>("*1000000\r\n$1\r\na\r\n"u8.ToArray());
        var before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(RespParseStatus.Incomplete, parser.TryParse(ref buffer, out _));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 * 1024);
        Assert.True(parser.BufferedBytes < 1024, $"buffered {parser.BufferedBytes} bytes");
    }

    [Fact]
    public void ManyArgumentsArrivingSlowlyAreAllKept()
    {
        const int count = 20_000;
        var frame = new StringBuilder().Append('*').Append(count + 1).Append("\r\n$3\r\nDEL\r\n");
        for (var i = 0; i < count; i++)
        {
            frame.Append("$1\r\n").Append((char)('a' + (i % 26))).Append("\r\n");
        }

        var bytes = Encoding.Latin1.GetBytes(frame.ToString());
        var driver = new ParserDriver();
        for (var offset = 0; offset < bytes.Length; offset += 1000)
        {
            driver.Feed(bytes.AsSpan(offset, Math.Min(1000, bytes.Length - offset)));
            Assert.True(driver.Parser.BufferedBytes < 4 * bytes.Length);
        }

        Assert.Single(driver.Requests);
        Assert.Equal(count + 1, driver.Requests[0].Length);
        Assert.Equal("z", driver.Requests[0][26]);
    }

    [Fact]
    public void ParsedArgumentsStayValidAfterTheInputBufferIsReused()
    {
        var data = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"u8.ToArray();
        var parser = new RespParser(new RespOptions());
        var buffer = new ReadOnlySequence<byte>(data);
        Assert.Equal(RespParseStatus.Request, parser.TryParse(ref buffer, out var request));
        Array.Fill(data, (byte)'!');
        Assert.Equal("key", request!.Text(1));
        Assert.Equal("key"u8.ToArray(), request.ByteString(1).ToByteArray());
    }

    [Theory]
    [InlineData("GET k", new[] { "GET", "k" })]
    [InlineData("  GET   k  ", new[] { "GET", "k" })]
    [InlineData("\tGET\tk", new[] { "GET", "k" })]
    [InlineData("SET k \"a\\x41\\n\\t\\\\\\\"b\"", new[] { "SET", "k", "aA\n\t\\\"b" })]
    [InlineData("SET k 'it\\'s'", new[] { "SET", "k", "it's" })]
    [InlineData("SET k 'a\\nb'", new[] { "SET", "k", "a\\nb" })]
    [InlineData("SET k \"\"", new[] { "SET", "k", "" })]
    [InlineData("SET k x\"y z\"", new[] { "SET", "k", "xy z" })]
    [InlineData("SET k \"a\\x4\"", new[] { "SET", "k", "ax4" })]
    [InlineData("SET\0 ignored", new[] { "SET" })]
    public void InlineCommandsAreSplitLikeSdssplitargs(string line, string[] expected)
    {
        var driver = new ParserDriver().Feed(line + "\r\n");
        Assert.Null(driver.Error);
        Assert.Equal([expected], driver.Requests);
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("-1", -1L)]
    [InlineData("9223372036854775807", long.MaxValue)]
    [InlineData("-9223372036854775808", long.MinValue)]
    public void IntegersParseAsString2ll(string text, long expected)
    {
        Assert.True(RespInteger.TryParse(Encoding.ASCII.GetBytes(text), out var value));
        Assert.Equal(expected, value);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-")]
    [InlineData("-0")]
    [InlineData("01")]
    [InlineData("+1")]
    [InlineData(" 1")]
    [InlineData("1 ")]
    [InlineData("1.0")]
    [InlineData("9223372036854775808")]
    [InlineData("-9223372036854775809")]
    [InlineData("99999999999999999999")]
    public void NonCanonicalIntegersAreRefusedAsString2llRefusesThem(string text) =>
        Assert.False(RespInteger.TryParse(Encoding.ASCII.GetBytes(text), out _));

    [Fact]
    public void AnUnauthenticatedMultibulkRequestMayHaveExactlyTenArguments()
    {
        // Redis refuses more than 10 (ll > 10 in processMultibulkBuffer), not 10 itself.
        var driver = new ParserDriver();
        driver.Parser.AuthenticationRequired = true;
        driver.Feed("*10\r\n");
        Assert.Null(driver.Error);
        driver.Feed(string.Concat(Enumerable.Repeat("$1\r\na\r\n", 10)));
        Assert.Null(driver.Error);
        Assert.Equal(10, Assert.Single(driver.Requests).Length);
    }

    [Fact]
    public void ABulkOfExactlyTheLargestLengthIsAcceptedWhateverWayItArrives()
    {
        var options = new RespOptions { MaxBulkLength = 8 };
        const string header = "*2\r\n$4\r\nECHO\r\n$8\r\n";
        Assert.Equal([["ECHO", "12345678"]], new ParserDriver(options).Feed(header + "12345678\r\n").Requests);
        var dripped = new ParserDriver(options).Feed(header).Feed("12345678\r\n");
        Assert.Null(dripped.Error);
        Assert.Equal([["ECHO", "12345678"]], dripped.Requests);
        Assert.Equal("ERR Protocol error: invalid bulk length", new ParserDriver(options).Feed("*2\r\n$4\r\nECHO\r\n$9\r\n").Error);
    }

    [Fact]
    public void ARequestOfExactlyTheQueryBufferLimitIsAcceptedWhateverWayItArrives()
    {
        // GET (3 bytes) and a 7-byte key: 10 bytes of arguments, the limit itself.
        var options = new RespOptions { MaxRequestBytes = 10 };
        const string request = "*2\r\n$3\r\nGET\r\n$7\r\n1234567\r\n";
        Assert.Equal([["GET", "1234567"]], new ParserDriver(options).Feed(request).Requests);
        var bytes = Encoding.Latin1.GetBytes(request);
        for (var split = 1; split < bytes.Length; split++)
        {
            var driver = new ParserDriver(options).Feed(bytes.AsSpan(0, split)).Feed(bytes.AsSpan(split));
            Assert.Null(driver.Error);
            Assert.Equal([["GET", "1234567"]], driver.Requests);
        }
    }

    [Fact]
    public void InlineHexEscapesTakeLowerAndUpperCaseDigits()
    {
        var driver = new ParserDriver().Feed("ECHO \"\\x6a\\x4A\\xff\\x0a\"\r\n");
        Assert.Null(driver.Error);
        Assert.Equal([["ECHO", "jJ\xff\n"]], driver.Requests);
    }
}
