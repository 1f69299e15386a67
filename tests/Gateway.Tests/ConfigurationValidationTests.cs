using Dcache.Gateway.Cluster;
using Dcache.Gateway.Hosting;
using Microsoft.Extensions.Configuration;

namespace Dcache.Gateway.Tests;

/// <summary>A gateway refuses settings an operator could mistype with one line naming the setting, instead of a stack trace or a gateway that never reaches a node.</summary>
public sealed class ConfigurationValidationTests
{
    private static IConfiguration Configuration(string key, string value) => new ConfigurationBuilder()
        .AddInMemoryCollection(new Dictionary<string, string?>
        {
            [$"{ClusterOptions.Section}:ClusterSecret"] = "secret",
            [$"{GatewayOptions.Section}:{key}"] = value,
        })
        .Build();

    private static void Validate(IConfiguration configuration)
    {
        configuration.GetSection(GatewayOptions.Section).Get<GatewayOptions>()!.Validate();
        configuration.GetSection(ClusterOptions.Section).Get<ClusterOptions>()!.Validate();
    }

    [Fact]
    public void TheDefaultsWithASecretPass() => Validate(Configuration("LocalReads", "false"));

    [Theory]
    [InlineData("Bind", "", "Bind")]
    [InlineData("Bind", "gateway.example", "Bind")]
    [InlineData("Port", "0", "Port")]
    [InlineData("Port", "65536", "Port")]
    [InlineData("HttpUrl", "127.0.0.1:9121", "HttpUrl")]
    [InlineData("HttpUrl", "http://127.0.0.1:6379", "Port")]
    [InlineData("Cluster:Nodes", "", "Cluster:Nodes")]
    [InlineData("Cluster:Nodes", ",", "Cluster:Nodes")]
    [InlineData("Cluster:Nodes", "127.0.0.1:7001", "Cluster:Nodes")]
    [InlineData("Cluster:Nodes", "http://127.0.0.1:0", "Cluster:Nodes")]
    [InlineData("Cluster:ClusterId", "", "Cluster:ClusterId")]
    [InlineData("Cluster:ClusterSecret", "secret ", "Cluster:ClusterSecret")]
    [InlineData("Cluster:StreamsPerNode", "0", "Cluster:StreamsPerNode")]
    [InlineData("Cluster:MaxBatch", "0", "Cluster:MaxBatch")]
    [InlineData("Cluster:MaxMessageBytes", "-1", "Cluster:MaxMessageBytes")]
    [InlineData("Cluster:MaxCommandsPerNode", "0", "Cluster:MaxCommandsPerNode")]
    [InlineData("Cluster:AttemptTimeoutMilliseconds", "0", "Cluster:AttemptTimeoutMilliseconds")]
    [InlineData("Cluster:DeadlineMilliseconds", "86400001", "Cluster:DeadlineMilliseconds")]
    [InlineData("Cluster:StatusPollMilliseconds", "0", "Cluster:StatusPollMilliseconds")]
    [InlineData("Cluster:RemovedNodeGraceMilliseconds", "-1", "Cluster:RemovedNodeGraceMilliseconds")]
    [InlineData("Cluster:BreakAfterFailures", "1", "Cluster:BreakAfterFailures")]
    [InlineData("Cluster:BreakMilliseconds", "499", "Cluster:BreakMilliseconds")]
    public void AMistypedSettingIsRefusedByName(string key, string value, string named)
    {
        var message = Assert.Throws<InvalidOperationException>(() => Validate(Configuration(key, value))).Message;
        Assert.Contains($"{GatewayOptions.Section}:{named}", message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', message);
    }

    [Theory]
    [InlineData("Bind", "0.0.0.0")]
    [InlineData("Bind", "::1")]
    [InlineData("Port", "65535")]
    [InlineData("HttpUrl", "http://localhost:9121")]
    [InlineData("Cluster:AttemptTimeoutMilliseconds", "10")]
    [InlineData("Cluster:BreakAfterFailures", "2")]
    [InlineData("Cluster:BreakMilliseconds", "500")]
    [InlineData("Cluster:RemovedNodeGraceMilliseconds", "0")]
    [InlineData("Cluster:MaxMessageBytes", "131072")]
    public void TheEdgesOfEachRangeAreAccepted(string key, string value) => Validate(Configuration(key, value));
}
