namespace Dcache.Protocol;

/// <summary>Where nodes and gateways answer Prometheus: /metrics (a trailing slash too) on their HTTP port.</summary>
public static class MetricsEndpoint
{
    /// <summary>
    /// Whether a request that came in on <paramref name="localPort"/> for <paramref name="path"/> is a scrape: told by
    /// the port the connection arrived on, not the Host header, which names another port behind a mapping or a proxy.
    /// </summary>
    public static bool Matches(int localPort, int metricsPort, string? path) =>
        localPort == metricsPort && path is "/metrics" or "/metrics/";
}
