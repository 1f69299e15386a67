using System.Net.Sockets;

namespace Dcache.TestSupport.Network;

/// <summary>
/// One directed link's state: cut or not, and the proxied connections that travel it, which a heal closes (they lost
/// data while cut). Usually one <see cref="LinkProxy"/>'s own; the gateway's link to a node is shared by every proxy
/// that leads to that node, since the gateway may reach it at any of their addresses (see the chaos suite's ProxyMesh).
/// </summary>
public sealed class Link
{
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _open = [];
    private volatile bool _cut;

    // How many faults hold the link cut: overlapping faults may cut the same link, and the one that heals first must
    // not end the other's cut.
    private int _holders;

    public bool IsCut => _cut;

    public void Cut()
    {
        lock (_lock)
        {
            _holders++;
            _cut = true;
        }
    }

    /// <summary>One fault's cut ends: the link heals unless another fault still holds it cut.</summary>
    public void Release() => Heal(all: false);

    /// <summary>Every fault's cut ends.</summary>
    public void Heal() => Heal(all: true);

    private void Heal(bool all)
    {
        List<Socket> open;
        lock (_lock)
        {
            if (!_cut)
            {
                return;
            }

            _holders = all ? 0 : _holders - 1;
            if (_holders > 0)
            {
                return;
            }

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
