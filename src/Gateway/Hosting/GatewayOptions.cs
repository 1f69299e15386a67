using System.Net;
using System.Net.Sockets;
using Dcache.Protocol;

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

    /// <summary>The Redis-protocol listener's address.</summary>
    public IPEndPoint RespEndpoint() => new(IPAddress.Parse(Bind), Port);

    /// <summary>The /health and /metrics listener's address.</summary>
    public IPEndPoint HttpEndpoint() => ConfigurationChecks.ListenEndpoint(HttpUrl, $"{Section}:HttpUrl");

    /// <summary>Throws <see cref="InvalidOperationException"/> naming the first setting that is out of range.</summary>
    public void Validate()
    {
        // TryParse also takes inet_aton's forms, read as no operator means them: "6379" (a port put here) is 0.0.24.235,
        // "010.0.0.1" is 8.0.0.1. An IPv4 address must be written as it is printed.
        if (!IPAddress.TryParse(Bind, out var address) || (address.AddressFamily == AddressFamily.InterNetwork && address.ToString() != Bind))
        {
            throw new InvalidOperationException($"{Section}:Bind must be an IP address (0.0.0.0 for every interface), not '{Bind}'");
        }

        // Port 0 would listen on a port chosen at random, where no client would look.
        ConfigurationChecks.InRange(Port, 1, 65535, $"{Section}:Port");
        if (HttpEndpoint().Port == Port)
        {
            throw new InvalidOperationException($"{Section}:Port and {Section}:HttpUrl must use different ports, not both {Port}");
        }
    }
}
