using System.Globalization;

namespace Dcache.Protocol;

/// <summary>The "1=http://127.0.0.1:7001,2=http://127.0.0.1:7002" member lists of node configuration and dcachectl.</summary>
public static class ClusterMembers
{
    /// <summary>
    /// Node id -> gRPC URL, sorted by id; throws <see cref="FormatException"/> naming the bad part. With
    /// <paramref name="requirePort"/> a URL must spell out its port (see <see cref="NamesPort"/>): asked of addresses an
    /// operator types into a command, not of configurations that ran before the check existed (a port-less URL that
    /// reaches a node on port 80, through a proxy or a service, works).
    /// </summary>
    public static IReadOnlyDictionary<ulong, string> Parse(string text, bool requirePort = false)
    {
        var members = new SortedDictionary<ulong, string>();
        var addresses = new Dictionary<string, ulong>(StringComparer.OrdinalIgnoreCase);
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var eq = part.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0 || !ulong.TryParse(part.AsSpan(0, eq), NumberStyles.None, CultureInfo.InvariantCulture, out var id) || id == 0)
            {
                throw new FormatException($"'{part}' is not of the form <node id>=<url>");
            }

            var url = part[(eq + 1)..];
            if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp)
            {
                throw new FormatException($"'{url}' (node {id}) is not an http:// URL");
            }

            if (requirePort && !NamesPort(url))
            {
                throw new FormatException($"'{url}' (node {id}) names no port (the node's GrpcUrl port, as in http://{uri.Host}:7001)");
            }

            if (uri.Port == 0)
            {
                // Port 0 only means "any free port" to a listener: nothing can be reached there.
                throw new FormatException($"'{url}' (node {id}) has port 0");
            }

            if (!members.TryAdd(id, url.TrimEnd('/')))
            {
                throw new FormatException($"node {id} is listed twice");
            }

            // One address is one node: a second member there would never be reached, and the node that is there refuses
            // every message meant for the other.
            var authority = NodeOf(uri);
            if (!addresses.TryAdd(authority, id))
            {
                throw new FormatException($"nodes {addresses[authority]} and {id} are both listed at {authority}");
            }
        }

        return members;
    }

    /// <summary>
    /// Whether two member URLs name one node: the same scheme, host and port however they are written (letter case, a
    /// path or user name, the default port spelled out or not). False when either is not an absolute URL.
    /// </summary>
    public static bool SameNode(string first, string second) =>
        Uri.TryCreate(first, UriKind.Absolute, out var a) && Uri.TryCreate(second, UriKind.Absolute, out var b)
        && string.Equals(NodeOf(a), NodeOf(b), StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Whether <paramref name="url"/> spells out its port. A node's URL without one means port 80, where no node listens
    /// by default: `member add --address http://10.0.0.4` added a member nothing could reach (write :80 to mean it).
    /// </summary>
    public static bool NamesPort(string url)
    {
        var start = url.IndexOf("://", StringComparison.Ordinal);
        var authority = start < 0 ? url : url[(start + 3)..];
        var end = authority.IndexOfAny(['/', '?', '#']);
        authority = end < 0 ? authority : authority[..end];
        // After an IPv6 literal's closing bracket, or anywhere in a host name or IPv4 address.
        var colon = authority.LastIndexOf(':');
        return colon > authority.LastIndexOf(']') && colon < authority.Length - 1;
    }

    private static string NodeOf(Uri uri) => string.Create(CultureInfo.InvariantCulture, $"{uri.Scheme}://{uri.Host}:{uri.Port}");
}
