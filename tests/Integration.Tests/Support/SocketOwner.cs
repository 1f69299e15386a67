using System.Globalization;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// Which process opened a TCP connection on this machine, from /proc: the connecting socket is the one whose local
/// port is the accepted connection's remote port and whose remote port is the listener's, and its inode shows among
/// the owner's file descriptors. The proxies need it because the gateway learns the nodes' addresses from the nodes,
/// and those are the node-to-node link proxies (see <see cref="ProxyMesh"/>): a connection the gateway opens there is
/// still a connection from the gateway, to be cut with the gateway's links, not with the nodes' link. Likewise every
/// node reaches a joined or moved node at the one address the log gives, so that node's proxy asks who connected.
/// </summary>
internal static class SocketOwner
{
    // IPv4 sockets, and the dual-mode IPv6 sockets .NET's HTTP client connects with (their 127.0.0.1 is v4-mapped).
    private static readonly string[] SocketTables = ["/proc/net/tcp", "/proc/net/tcp6"];

    /// <summary>
    /// True when process <paramref name="pid"/> holds the socket that connected from 127.0.0.1:<paramref name="clientPort"/>
    /// to the listener on <paramref name="listenerPort"/>; false when another process does, or the connection is gone.
    /// </summary>
    public static bool Opened(int pid, int clientPort, int listenerPort) => OwnerOf([pid], clientPort, listenerPort) == pid;

    /// <summary>Which of <paramref name="pids"/> holds the socket that connected from <paramref name="clientPort"/> to <paramref name="listenerPort"/>, if any.</summary>
    public static int? OwnerOf(IEnumerable<int> pids, int clientPort, int listenerPort)
    {
        if (FindInode(clientPort, listenerPort) is not { } inode)
        {
            return null;
        }

        var socket = $"socket:[{inode}]";
        foreach (var pid in pids)
        {
            try
            {
                foreach (var descriptor in Directory.EnumerateFiles($"/proc/{pid}/fd"))
                {
                    if (new FileInfo(descriptor).LinkTarget == socket)
                    {
                        return pid;
                    }
                }
            }
            catch (Exception ex) when (ex is DirectoryNotFoundException or IOException or UnauthorizedAccessException)
            {
                // The process is gone (or a descriptor closed while listed): it holds nothing now.
            }
        }

        return null;
    }

    /// <summary>The inode of the socket bound to <paramref name="localPort"/> and connected to <paramref name="remotePort"/>.</summary>
    private static string? FindInode(int localPort, int remotePort)
    {
        var local = localPort.ToString("X4", CultureInfo.InvariantCulture);
        var remote = remotePort.ToString("X4", CultureInfo.InvariantCulture);
        foreach (var table in SocketTables)
        {
            if (!File.Exists(table))
            {
                continue;
            }

            // "sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...", addresses as HEXADDR:HEXPORT.
            foreach (var line in File.ReadLines(table).Skip(1))
            {
                var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (fields.Length > 9 && string.Equals(PortOf(fields[1]), local, StringComparison.Ordinal) && string.Equals(PortOf(fields[2]), remote, StringComparison.Ordinal))
                {
                    return fields[9];
                }
            }
        }

        return null;
    }

    private static string PortOf(string endpoint) => endpoint[(endpoint.LastIndexOf(':') + 1)..];
}
