using Dcache.Gateway.Cluster;
using Dcache.Gateway.Hosting;
using Dcache.Gateway.Resp;
using Dcache.Protocol;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

// Settings next to the program, wherever it is started from.
var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });

const string RespSection = $"{GatewayOptions.Section}:{RespOptions.SectionName}";
GatewayOptions gatewayOptions;
ClusterOptions clusterOptions;
try
{
    CheckKnownKeys(builder.Configuration);
    // A value the binder cannot convert (a misspelt ReadRouting, a port that is not a number) fails here too.
    gatewayOptions = builder.Configuration.GetSection(GatewayOptions.Section).Get<GatewayOptions>() ?? new GatewayOptions();
    clusterOptions = builder.Configuration.GetSection(ClusterOptions.Section).Get<ClusterOptions>() ?? new ClusterOptions();
    gatewayOptions.Validate();
    clusterOptions.Validate();
    ValidateResp(builder.Configuration.GetSection(RespSection));
}
catch (Exception ex) when (ex is InvalidOperationException or FormatException)
{
    Console.Error.WriteLine($"dcache-gateway: invalid configuration: {ex.Message}");
    return 2;
}

builder.Services.AddSingleton(Options.Create(gatewayOptions));
builder.Services.AddSingleton(Options.Create(clusterOptions));
builder.Services.AddSingleton<CacheCluster>();
builder.Services.AddSingleton<ICacheCluster>(sp => gatewayOptions.LocalReads
    ? new LocalReadsCluster(sp.GetRequiredService<CacheCluster>())
    : sp.GetRequiredService<CacheCluster>());
builder.Services.AddRespFrontEnd(resp => builder.Configuration.GetSection(RespSection).Bind(resp));
builder.Services.Configure<HostOptions>(host => host.ShutdownTimeout = TimeSpan.FromSeconds(5));
builder.Services.AddOpenTelemetry()
    .ConfigureResource(resource => resource.AddService("dcache-gateway"))
    .WithMetrics(metrics => metrics
        // "System.Runtime" is .NET's built-in meter (GC, allocation, thread pool, lock contention): allocated bytes
        // and GC pause time per process are what the hot paths' allocation budget is checked against.
        .AddMeter(RespMetrics.MeterName, CacheCluster.MeterName, "System.Runtime")
        .AddPrometheusExporter());

builder.WebHost.ConfigureKestrel(kestrel =>
{
    // Redis protocol on raw TCP, through Kestrel's connection pipeline (System.IO.Pipelines).
    kestrel.Listen(gatewayOptions.RespEndpoint(), listen => listen.UseConnectionHandler<RespConnectionHandler>());
    kestrel.Listen(gatewayOptions.HttpEndpoint(), listen => listen.Protocols = HttpProtocols.Http1);
});

var app = builder.Build();
var metricsPort = gatewayOptions.HttpEndpoint().Port;
app.UseOpenTelemetryPrometheusScrapingEndpoint(context => MetricsEndpoint.Matches(context.Connection.LocalPort, metricsPort, context.Request.Path.Value));
app.MapGet("/health", (ICacheCluster cluster) =>
{
    var view = cluster.View;
    return Results.Json(new { leaderId = view.LeaderId, leaderAddress = view.LeaderAddress, nodes = view.Nodes, healthyNodes = view.HealthyNodes });
});

try
{
    await app.RunAsync().ConfigureAwait(false);
}
catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException)
{
    // Kestrel could not open a listener: a port another process holds (a Redis server on 6379, another gateway:
    // IOException), an address this host does not have or a port it may not open (SocketException).
    Console.Error.WriteLine($"dcache-gateway: cannot listen: {ex.Message}");
    return 2;
}

return 0;

static void CheckKnownKeys(IConfiguration configuration)
{
    static IEnumerable<string> KeysOf(IConfiguration configuration, string section) => configuration.GetSection(section).GetChildren().Select(child => child.Key);

    ConfigurationChecks.KnownKeys(ConfigurationChecks.Root, KeysOf(configuration, ConfigurationChecks.Root), ConfigurationChecks.RootSections);
    ConfigurationChecks.KnownKeys(GatewayOptions.Section, KeysOf(configuration, GatewayOptions.Section), [.. ConfigurationChecks.SettingNames(typeof(GatewayOptions)), ClusterOptions.SectionName, RespOptions.SectionName]);
    ConfigurationChecks.KnownKeys(ClusterOptions.Section, KeysOf(configuration, ClusterOptions.Section), ConfigurationChecks.SettingNames(typeof(ClusterOptions)));
    ConfigurationChecks.KnownKeys(RespSection, KeysOf(configuration, RespSection), ConfigurationChecks.SettingNames(typeof(RespOptions)));
}

// The front end validates its options again when it starts; checked here first, a bad value is a one-line error.
static void ValidateResp(IConfigurationSection section)
{
    var resp = new RespOptions();
    section.Bind(resp);
    try
    {
        resp.Validate();
    }
    catch (ArgumentException ex)
    {
        throw new InvalidOperationException($"{section.Path}: {ex.Message.ReplaceLineEndings(" ")}", ex);
    }
}
