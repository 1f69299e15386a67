using System.Net.Sockets;

namespace Dcache.Chaos;

/// <summary>
/// One directed link's state: cut or not, and the proxied connections that travel it, which a heal closes (they lost
/// data while cut). Usually one <see cref="LinkProxy"/>'s own; the gateway's link to a node is shared by every proxy
/// that leads to that node, since the gateway may reach it at any of their addresses (see <see cref="ProxyMesh"/>).
/// </summary>
internal sealed class Link
{
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _open = [];
    private volatile bool _cut;

    public bool IsCut => _cut;

    public void Cut() => _cut = true;

    public void Heal()
    {
        if (!_cut)
        {
            return;
        }

        List<Socket> open;
        lock (_lock)
        {
            _cut = false;
            open = [.. _open];
        }

        // Whatever these connections carried while cut is gone: close them so both ends start afresh.
        foreach (var socket in open)
        {
            LinkProxy.CloseQuietly(socket);
        }
    }

    public void Track(Socket socket)
    {
        lock (_lock)
        {
            _open.Add(socket);
        }
    }

    public void Forget(Socket socket)
    {
        lock (_lock)
        {
            _open.Remove(socket);
        }
    }
}
