using System.Net;
using System.Net.Sockets;

namespace Dcache.TestSupport.Network;

/// <summary>
/// A TCP proxy on one directed link: node From's connections to node To, or the gateway's. Node From lists To at this
/// proxy's address, so everything From sends to To (its outbound Raft stream and snapshot calls) passes here, while
/// To's traffic to From goes through the proxy of the opposite link. Cutting the link makes it a black hole: bytes in
/// both directions of its connections are read and dropped, new connections are accepted and never forwarded, so
/// the sender sees silence (timeouts), as on a partitioned network, not a refused connection. Healing closes the
/// black-holed connections (they lost data) and the sender reconnects. Stalling the link instead holds every byte and
/// closes nothing, so that only the ends' own timeouts (HTTP/2 keepalive) can end its connections. A connection may belong to another link than
/// the proxy's own: the chaos suite's mesh routes the gateway's connections to the gateway's link to <see cref="To"/>, and on the
/// proxy of a node reached at an address from the log, each node's connections to that node's link from it.
/// </summary>
public sealed class LinkProxy : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly int _targetPort;
    private readonly Link _own;
    private readonly Func<Socket, Link?>? _linkOf;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _lock = new();
    private readonly HashSet<Socket> _open = [];
    private readonly Task _accepting;
    private volatile bool _retired;

    /// <param name="own">The link this proxy carries (a new one unless shared).</param>
    /// <param name="linkOf">The link an accepted connection travels instead of <paramref name="own"/>, if any.</param>
    public LinkProxy(ulong from, ulong to, int targetPort, Link? own = null, Func<Socket, Link?>? linkOf = null)
    {
        From = from;
        To = to;
        _targetPort = targetPort;
        _own = own ?? new Link();
        _linkOf = linkOf;
        _listener = new TcpListener(IPAddress.Loopback, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = Task.Run(AcceptAsync);
    }

    public ulong From { get; }

    public ulong To { get; }

    public int Port { get; }

    public string Url => $"http://127.0.0.1:{Port}";

    public bool IsCut => _own.IsCut;

    public void Cut() => _own.Cut();

    public void Heal() => _own.Heal();

    /// <inheritdoc cref="Link.Stall"/>
    public void Stall() => _own.Stall();

    /// <inheritdoc cref="Link.Resume"/>
    public void Resume() => _own.Resume();

    /// <summary>
    /// The address is abandoned (its node moved away): every connection, open or new, is closed at once. The proxy
    /// keeps its port until disposed, so no later listener of the run takes it and answers for the node.
    /// </summary>
    public void Retire()
    {
        _retired = true;
        List<Socket> open;
        lock (_lock)
        {
            open = [.. _open];
        }

        foreach (var socket in open)
        {
            Close(socket);
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        Track(client);
        if (_retired)
        {
            Close(client);
            return;
        }

        Link link;
        try
        {
            link = _linkOf?.Invoke(client) ?? _own;
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            Close(client);
            return;
        }

        link.Track(client);
        link.CountConnection();
        Socket? server = null;
        try
        {
            client.NoDelay = true;
            if (link.IsCut)
            {
                await DrainAsync(client).ConfigureAwait(false);
                return;
            }

            // Opened during a stall, the connection reaches the other end only when the stall ends.
            await link.FlowingAsync(_stop.Token).ConfigureAwait(false);
            server = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            Track(server);
            link.Track(server);
            await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token).ConfigureAwait(false);
            await Task.WhenAny(PumpAsync(client, server, link), PumpAsync(server, client, link)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
        finally
        {
            link.Forget(client);
            Close(client);
            if (server is not null)
            {
                link.Forget(server);
                Close(server);
            }
        }
    }

    /// <summary>Copies one direction; while the link is cut, reads and drops; while it is stalled, holds what it read and reads no more.</summary>
    private async Task PumpAsync(Socket from, Socket to, Link link)
    {
        var buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                var read = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token).ConfigureAwait(false);
                if (read == 0)
                {
                    return;
                }

                await link.FlowingAsync(_stop.Token).ConfigureAwait(false);
                if (!link.IsCut)
                {
                    await to.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, _stop.Token).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or IOException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private async Task DrainAsync(Socket socket)
    {
        var buffer = new byte[16 * 1024];
        while (await socket.ReceiveAsync(buffer, SocketFlags.None, _stop.Token).ConfigureAwait(false) > 0)
        {
        }
    }

    private void Track(Socket socket)
    {
        lock (_lock)
        {
            _open.Add(socket);
        }
    }

    private void Close(Socket socket)
    {
        lock (_lock)
        {
            _open.Remove(socket);
        }

        CloseQuietly(socket);
    }

    /// <summary>Closes a proxied socket at once (no lingering), whoever closed it first.</summary>
    public static void CloseQuietly(Socket socket)
    {
        try
        {
            socket.Close(0);
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        List<Socket> open;
        lock (_lock)
        {
            open = [.. _open];
        }

        foreach (var socket in open)
        {
            Close(socket);
        }

        try
        {
            await _accepting.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }
}
