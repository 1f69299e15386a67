using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Protocol;
using Dcache.Storage;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

// Settings next to the program, wherever it is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

NodeOptions nodeOptions;
try
{
    ConfigurationChecks.KnownKeys(ConfigurationChecks.Root, builder.Configuration.GetSection(ConfigurationChecks.Root).GetChildren().Select(child => child.Key), ConfigurationChecks.RootSections);
    ConfigurationChecks.KnownKeys(NodeOptions.Section, builder.Configuration.GetSection(NodeOptions.Section).GetChildren().Select(child => child.Key), ConfigurationChecks.SettingNames(typeof(NodeOptions)));
    // A value the binder cannot convert (a NodeId that is not a number) fails here too.
    nodeOptions = builder.Configuration.GetSection(NodeOptions.Section).Get<NodeOptions>() ?? new NodeOptions();
    nodeOptions.Validate();
    nodeOptions.CheckDataDirectoryWritable();
}
catch (Exception ex) when (ex is InvalidOperationException or FormatException)
{
    Console.Error.WriteLine($"dcache-node: invalid configuration: {ex.Message}");
    return 2;
}

builder.Services.AddSingleton(Options.Create(nodeOptions));
builder.Services.AddSingleton(nodeOptions);
// The system clock, unless a test moves this node's wall clock (TestOnlyClockOffset).
builder.Services.AddSingleton(TestOnlyOffsetClock.For(nodeOptions));
builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(10));

builder.WebHost.ConfigureKestrel(kestrel =>
{
    // gRPC needs an HTTP/2-only endpoint: without TLS, Http1AndHttp2 silently falls back to HTTP/1.1.
    kestrel.Listen(ConfigurationChecks.ListenEndpoint(nodeOptions.GrpcUrl, $"{NodeOptions.Section}:GrpcUrl"), listen => listen.Protocols = HttpProtocols.Http2);
    // Health and metrics are scraped over HTTP/1.1.
    kestrel.Listen(ConfigurationChecks.ListenEndpoint(nodeOptions.HttpUrl, $"{NodeOptions.Section}:HttpUrl"), listen => listen.Protocols = HttpProtocols.Http1);
    // gRPC's own limits bound each message (each service's, checked before its handler runs); Kestrel's body limit applies
    // to unary calls only, and at this node's MaxMessageBytes it refused a larger forwarded write (ExecuteOne) from
    // inside the handler, which the sender could only take for an unknown outcome.
    kestrel.Limits.MaxRequestBodySize = MessageLimits.MaxMaxMessageBytes;
    kestrel.Limits.Http2.MaxStreamsPerConnection = 1000;
    if (nodeOptions.KeepAlivePingDelaySeconds > 0)
    {
        // Without pings a client that vanished without closing its connection (no FIN, no RST) leaves its calls open
        // here for good: a gateway's command streams with their replies queued, a peer's Raft stream.
        kestrel.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(nodeOptions.KeepAlivePingDelaySeconds);
        kestrel.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(nodeOptions.KeepAlivePingTimeoutSeconds);
    }
});

builder.Services.AddSingleton<NodeMetrics>();
builder.Services.AddOpenTelemetry()
    .ConfigureResource(resource => resource.AddService("dcache-node", serviceInstanceId: nodeOptions.NodeId.ToString(System.Globalization.CultureInfo.InvariantCulture)))
    .WithMetrics(metrics => metrics
        // "System.Runtime" is .NET's built-in meter (GC, allocation, thread pool, lock contention): allocated bytes
        // and GC pause time per process are what the hot paths' allocation budget is checked against.
        .AddMeter(NodeMetrics.MeterName, "System.Runtime")
        .AddPrometheusExporter());
builder.Services.AddSingleton<NodeRuntime>();
builder.Services.AddHostedService(sp => sp.GetRequiredService<NodeRuntime>());
builder.Services.AddSingleton(sp => sp.GetRequiredService<NodeRuntime>().Driver);
builder.Services.AddSingleton<IRaftInbox>(sp => sp.GetRequiredService<NodeRuntime>().Driver);
builder.Services.AddSingleton(sp => sp.GetRequiredService<NodeRuntime>().Addresses);
builder.Services.AddSingleton(sp => sp.GetRequiredService<NodeRuntime>().Credentials);
builder.Services.AddSingleton<ClusterAuthInterceptor>();
builder.Services.AddGrpc(grpc =>
{
    grpc.Interceptors.Add<ClusterAuthInterceptor>();
    grpc.Interceptors.Add<NodeStoppedInterceptor>();
    grpc.MaxReceiveMessageSize = nodeOptions.MaxMessageBytes;
    grpc.MaxSendMessageSize = nodeOptions.MaxMessageBytes;
    grpc.EnableDetailedErrors = false;
})
    // Peers exchange whatever the log holds, and each node's MaxMessageBytes bounds only the commands it accepts: with
    // each node's own limit here too, a leader whose limit was raised first (a rolling change) sent entries its
    // followers refused, again at every heartbeat, and nothing committed. Only authenticated peers reach this service.
    .AddServiceOptions<RaftTransportService>(raft =>
    {
        raft.MaxReceiveMessageSize = MessageLimits.MaxMaxMessageBytes;
        raft.MaxSendMessageSize = MessageLimits.MaxMaxMessageBytes;
    });

var app = builder.Build();
app.MapGrpcService<RaftTransportService>();
app.MapGrpcService<CacheService>();
app.MapGrpcService<BackupService>();
app.MapGrpcService<AdminService>();
// Prometheus scrapes over HTTP/1.1 (it cannot speak h2c), so metrics live on the HTTP port only.
var metricsPort = new Uri(nodeOptions.HttpUrl).Port;
app.UseOpenTelemetryPrometheusScrapingEndpoint(context => MetricsEndpoint.Matches(context.Connection.LocalPort, metricsPort, context.Request.Path.Value));
app.MapGet("/health", (RaftDriver driver) =>
{
    var status = driver.Status;
    return Results.Json(new
    {
        nodeId = status.NodeId,
        role = status.Role.ToString(),
        term = status.Term,
        leaderId = status.LeaderId,
        commitIndex = status.CommitIndex,
        appliedIndex = status.AppliedIndex,
        lastIndex = status.LastIndex,
        voters = status.Membership.Voters,
        learners = status.Membership.Learners,
    });
});

NodeRuntime runtime;
try
{
    // Opens storage, which refuses a directory another process holds (a node, or a restore), another node's or cluster's,
    // or one a restore left unfinished.
    runtime = app.Services.GetRequiredService<NodeRuntime>();
}
catch (DataDirectoryRefusedException ex)
{
    Console.Error.WriteLine($"dcache-node: data directory {ex.Message}");
    return 2;
}
catch (StorageCorruptionException ex)
{
    // Data that was written durably no longer reads back as written (a failing disk, not a power cut): starting on it
    // could lose entries this node acknowledged. A storage failure, as a failed write at run time is.
    Console.Error.WriteLine($"dcache-node: {ex.Message}. This node must not start on it: replace it as a dead node (operations.md, \"Replace a dead node\")");
    return 3;
}
catch (Exception ex) when (ex is InvalidOperationException or InvalidDataException or FormatException or StorageWriteException or Microsoft.Data.Sqlite.SqliteException or IOException)
{
    // What it found in its data directory cannot be started on (no snapshot to continue from, an entry or snapshot it
    // cannot read), or writing to it failed (a full disk while founding the log): a storage failure, as at run time.
    Console.Error.WriteLine($"dcache-node: cannot start on data directory {nodeOptions.DataDirectory}: {ex.Message}");
    return 3;
}

try
{
    await app.RunAsync().ConfigureAwait(false);
}
catch (Exception) when (runtime.ExitCode != 0)
{
    // The loop failed while the host was still starting (e.g. replay met a bad entry): stopping cut the start short.
}
catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException)
{
    // Kestrel could not open a listener: a port another process holds (a node already running there: IOException), an
    // address this host does not have or a port it may not open (SocketException).
    Console.Error.WriteLine($"dcache-node: cannot listen: {ex.Message}");
    return 2;
}

runtime.NoteHostEnded();

// Non-zero when the node stopped on its own because its Raft loop failed (e.g. a full disk): supervisors see it.
return runtime.ExitCode;
