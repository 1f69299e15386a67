using System.Globalization;
using System.Net;

namespace Dcache.Protocol;

/// <summary>
/// Startup checks of node and gateway settings. Each throws <see cref="InvalidOperationException"/> with one line that
/// names the setting's full key and what it accepts, which the programs print before exiting with code 2.
/// </summary>
public static class ConfigurationChecks
{
    public static void InRange(long value, long min, long max, string key)
    {
        if (value < min || value > max)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"{key} must be between {min} and {max}, not {value}"));
        }
    }

    public static void AtLeast(long value, long min, string key)
    {
        if (value < min)
        {
            throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"{key} must be at least {min}, not {value}"));
        }
    }

    /// <summary>
    /// A value every gRPC call carries in a header (the cluster id, the secret): set, printable ASCII, and without
    /// surrounding spaces, which HTTP drops in transit so that the receiver would compare a different value.
    /// </summary>
    public static void HeaderValue(string value, string key)
    {
        if (string.IsNullOrEmpty(value))
        {
            throw new InvalidOperationException($"{key} must be set");
        }

        if (value.Trim() != value || value.Any(c => c is < ' ' or > '~'))
        {
            throw new InvalidOperationException($"{key} must be printable ASCII without leading or trailing spaces");
        }
    }

    /// <summary>The address a listener binds: http://IP:port or http://localhost:port (a host name is not resolved).</summary>
    public static IPEndPoint ListenEndpoint(string url, string key)
    {
        if (Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttp && uri.Port is >= 1 and <= 65535)
        {
            if (uri.IsLoopback && uri.HostNameType == UriHostNameType.Dns)
            {
                return new IPEndPoint(IPAddress.Loopback, uri.Port);
            }

            if (uri.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6)
            {
                return new IPEndPoint(IPAddress.Parse(uri.DnsSafeHost), uri.Port);
            }
        }

        throw new InvalidOperationException($"{key} must be http://<IP address or localhost>:<port 1-65535>, not '{url}'");
    }
}
