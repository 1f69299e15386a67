namespace Dcache.Gateway.Hosting;

/// <summary>Where the gateway listens (section "Dcache:Gateway"); how it reaches the cluster is in "Dcache:Gateway:Cluster".</summary>
public sealed class GatewayOptions
{
    public const string Section = "Dcache:Gateway";

    /// <summary>Address of the Redis-protocol listener.</summary>
    public string Bind { get; set; } = "127.0.0.1";

    /// <summary>Port of the Redis-protocol listener.</summary>
    public int Port { get; set; } = 6379;

    /// <summary>HTTP/1.1 endpoint for /health and /metrics.</summary>
    public string HttpUrl { get; set; } = "http://127.0.0.1:9121";

    /// <summary>Serve every read locally (as if each connection had sent READONLY): for benchmarks and read-mostly tiers.</summary>
    public bool LocalReads { get; set; }
}
