using System.Net.Sockets;

namespace Dcache.TestSupport.Network;

/// <summary>
/// One directed link's state: cut or not, stalled or not, and the proxied connections that travel it, which a heal
/// closes (they lost data while cut). Usually one <see cref="LinkProxy"/>'s own; the gateway's link to a node is shared by every proxy
/// that leads to that node, since the gateway may reach it at any of their addresses (see the chaos suite's ProxyMesh).
/// </summary>
public sealed class Link
{
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _open = [];
    private volatile bool _cut;
    private volatile TaskCompletionSource? _stalled;
    private int _connections;

    // How many faults hold the link cut: overlapping faults may cut the same link, and the one that heals first must
    // not end the other's cut.
    private int _holders;

    public bool IsCut => _cut;

    public bool IsStalled => _stalled is not null;

    /// <summary>Connections opened over this link so far: a client that gave up on one and opened another shows here.</summary>
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>
    /// Nothing passes, and nothing is dropped or closed: what TCP sees of a network that holds or loses every packet for
    /// a while and then recovers. Connections carry on where they stopped once it resumes, unless an end gave up on
    /// them by a timeout of its own (a keepalive); connections opened meanwhile reach the other end only then.
    /// </summary>
    public void Stall()
    {
        lock (_lock)
        {
            _stalled ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    /// <summary>Ends a stall: what was held goes on.</summary>
    public void Resume()
    {
        TaskCompletionSource? stalled;
        lock (_lock)
        {
            stalled = _stalled;
            _stalled = null;
        }

        stalled?.TrySetResult();
    }

    /// <summary>Completes at once, or when the stall the link is in ends.</summary>
    public Task FlowingAsync(CancellationToken cancellationToken) =>
        _stalled is { } stalled ? stalled.Task.WaitAsync(cancellationToken) : Task.CompletedTask;

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

    public void CountConnection() => Interlocked.Increment(ref _connections);

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
