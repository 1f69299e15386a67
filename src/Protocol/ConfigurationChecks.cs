using System.Globalization;
using System.Net;
using System.Reflection;

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

    /// <summary>The root of every Dcache setting, and the sections under it: one environment may serve both programs.</summary>
    public const string Root = "Dcache";

    public static readonly IReadOnlyList<string> RootSections = ["Node", "Gateway"];

    /// <summary>
    /// Refuses a key of a section that names no setting. The configuration binder ignores such a key, so a misspelt
    /// setting (ElectionTick for ElectionTicks, a section named Nodes) left its default in force without a word.
    /// </summary>
    public static void KnownKeys(string section, IEnumerable<string> keys, IReadOnlyCollection<string> known)
    {
        foreach (var key in keys)
        {
            if (known.Contains(key, StringComparer.OrdinalIgnoreCase))
            {
                continue;
            }

            var closest = known.MinBy(name => EditDistance(name, key));
            var hint = closest is not null && EditDistance(closest, key) <= Math.Max(2, key.Length / 3) ? $" (did you mean {section}:{closest}?)" : "";
            throw new InvalidOperationException($"{section}:{key} is not a setting{hint}");
        }
    }

    /// <summary>The keys an options class takes: its public properties the binder can set.</summary>
    public static IReadOnlyCollection<string> SettingNames(Type options) =>
        [.. options.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(property => property.SetMethod is { IsPublic: true }).Select(property => property.Name)];

    /// <summary>Levenshtein distance, ignoring case as configuration keys do.</summary>
    private static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var substitution = char.ToUpperInvariant(a[i - 1]) == char.ToUpperInvariant(b[j - 1]) ? 0 : 1;
                current[j] = Math.Min(Math.Min(previous[j] + 1, current[j - 1] + 1), previous[j - 1] + substitution);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }
}
