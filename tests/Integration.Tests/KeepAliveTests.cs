using System.Diagnostics;
using System.Globalization;
using System.Net.Http;
using System.Text.RegularExpressions;
using Dcache.Integration.Tests.Support;
using Dcache.Protocol.Cache;
using Dcache.TestSupport.Network;
using Grpc.Net.Client;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>A node notices a client that vanished without closing its connection (HTTP/2 keepalive on its gRPC port).</summary>
public sealed partial class KeepAliveTests(ITestOutputHelper output)
{
    private const int PingDelaySeconds = 1;
    private const int PingTimeoutSeconds = 1;

    // Kestrel adds a second of caution to the delay and to the timeout, and checks its connections once a second, so the
    // ping and the close each come up to two seconds late (measured: 4.0 to 5.9 s in all at 1 s and 1 s); the rest
    // covers a scrape of /metrics on a busy machine.
    private static readonly TimeSpan Slack = TimeSpan.FromSeconds(6);

    [Fact]
    public async Task ANodeEndsTheCommandStreamOfAGatewayWhoseConnectionFellSilent()
    {
        await using var cluster = new LocalCluster(output, size: 1, settings: new Dictionary<string, string>
        {
            ["KeepAlivePingDelaySeconds"] = LocalCluster.Text(PingDelaySeconds),
            ["KeepAlivePingTimeoutSeconds"] = LocalCluster.Text(PingTimeoutSeconds),
        });
        await cluster.StartAsync();
        var node = cluster[1];
        await using var proxy = new LinkProxy(from: 0, to: node.Id, node.GrpcPort);

        // No pings from this client: one that gave up on the silent link would close its socket, and the proxy would
        // then close the node's side too, which is not what a vanished gateway does.
        using var channel = GrpcChannel.ForAddress(proxy.Url, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { KeepAlivePingDelay = Timeout.InfiniteTimeSpan },
        });
        using var call = new Cache.CacheClient(channel).Execute(cluster.Auth);
        var batch = new CommandBatch();
        batch.Commands.Add(Commands.Set("k", "v"));
        await call.RequestStream.WriteAsync(batch);
        Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
        Assert.True(call.ResponseStream.Current.Replies.Single().Ok);

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        await Eventually.WaitAsync(async () => await OpenCommandStreamsAsync(http, node) == 1, TimeSpan.FromSeconds(10), "the node to count the open command stream");

        // Neither side closes: the proxy reads and drops what both send, as a vanished host or a NAT that forgot the flow.
        proxy.Cut();
        var deadline = TimeSpan.FromSeconds(PingDelaySeconds + PingTimeoutSeconds) + Slack;
        var ended = await Eventually.WaitAsync(async () => await OpenCommandStreamsAsync(http, node) == 0, deadline, "the node to end the silent command stream");
        output.WriteLine($"the node ended the stream {ended.TotalSeconds:F1} s after the link fell silent (ping delay {PingDelaySeconds} s, timeout {PingTimeoutSeconds} s)");
        Assert.True(node.IsRunning);
    }

    /// <summary>dcache_node_command_streams on the node's /metrics (-1 before the node counted any stream).</summary>
    private static async Task<long> OpenCommandStreamsAsync(HttpClient http, NodeProcess node)
    {
        var match = CommandStreamsLine().Match(await http.GetStringAsync($"http://127.0.0.1:{node.HttpPort}/metrics"));
        return match.Success ? (long)double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : -1;
    }

    [GeneratedRegex(@"^dcache_node_command_streams(?:\{[^}]*\})? (\S+)", RegexOptions.Multiline)]
    private static partial Regex CommandStreamsLine();
}
