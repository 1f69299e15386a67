using System.Collections.Concurrent;
using Dcache.Gateway.Resp;
using Microsoft.Extensions.Logging;

namespace Dcache.Gateway.Tests.Support;

/// <summary>A <see cref="RespConnectionHandler"/> over a <see cref="FakeCacheCluster"/>, with a clock and a log the test can see.</summary>
internal sealed class TestServer
{
    /// <param name="localReads">as a gateway started with LocalReads: the handler sees the cluster through a <see cref="Cluster.LocalReadsCluster"/></param>
    public TestServer(Action<RespOptions>? configure = null, bool localReads = false)
    {
        Options = new RespOptions();
        configure?.Invoke(Options);
        Time = new ManualTime(Cluster);
        Handler = new RespConnectionHandler(localReads ? new Cluster.LocalReadsCluster(Cluster) : Cluster, Options, Clients, Log, Time);
    }

    public FakeCacheCluster Cluster { get; } = new();

    public RespOptions Options { get; }

    public RespClientRegistry Clients { get; } = new();

    public CapturingLogger Log { get; } = new();

    public ManualTime Time { get; }

    public RespConnectionHandler Handler { get; }

    public TestConnection Connect(System.IO.Pipelines.PipeOptions? toClientOptions = null) => new(Handler, toClientOptions);

    /// <summary>The gateway's clock, kept equal to the fake cluster's so expiry arithmetic agrees.</summary>
    internal sealed class ManualTime(FakeCacheCluster cluster) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => DateTimeOffset.FromUnixTimeMilliseconds(cluster.NowMs);
    }
}

internal sealed class CapturingLogger : ILogger<RespConnectionHandler>
{
    public ConcurrentQueue<(LogLevel Level, EventId Id, string Message, Exception? Exception)> Entries { get; } = new();

    /// <summary>Entries below this level are formatted (so formatting faults still surface) but not kept.</summary>
    public LogLevel MinimumKept { get; set; } = LogLevel.Trace;

    public IEnumerable<string> Errors => Entries.Where(e => e.Level >= LogLevel.Error).Select(e => e.Message + " " + e.Exception);

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var message = formatter(state, exception);
        if (logLevel >= MinimumKept)
        {
            Entries.Enqueue((logLevel, eventId, message, exception));
        }
    }
}
