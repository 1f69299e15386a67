using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// Free ports on 127.0.0.1 for processes a test starts, chosen at random below the kernel's ephemeral range.
/// Why not port 0: a port the OS picked from the ephemeral range is released before the child process binds it, and
/// meanwhile any outgoing connection on the machine (a node dialling a peer, a client) may take it as its source port:
/// the child then fails with "address already in use" (seen in CI: a node of a three-node test never started). Ports
/// in 10000-19999 are never handed out as source ports, and stay clear of dcachectl dev's base ports (20000 and up) in
/// DevClusterTests. The range is split between the two test assemblies that compile this file (Integration.Tests and
/// Chaos), which the test command runs at the same time: each picks from its own half, so a port one has chosen and
/// released until its node binds it is never chosen by the other meanwhile (seen in CI: node 3 of a transaction test
/// failed to bind, and the test timed out waiting for its first 300 EXECs).
/// </summary>
/// <remarks>
/// Within one test process, tests run in parallel: a port handed to one test is free again until its node binds it, so
/// it is not handed to another test for <see cref="Reissue"/>.
/// </remarks>
internal static class FreePorts
{
    private static readonly bool ChaosHalf = typeof(FreePorts).Assembly.GetName().Name?.Contains("Chaos", StringComparison.Ordinal) == true;
    private static readonly int First = ChaosHalf ? 15_000 : 10_000;
    private static readonly int Last = ChaosHalf ? 19_999 : 14_999;
    private static readonly TimeSpan Reissue = TimeSpan.FromMinutes(5);
    private static readonly ConcurrentDictionary<int, long> HandedOutAt = new();

    public static int[] Allocate(int count)
    {
        // Hold every chosen port's listener open until all are chosen, so they are distinct and really free.
        var listeners = new List<TcpListener>();
        try
        {
            for (var attempt = 0; listeners.Count < count; attempt++)
            {
                if (attempt == 10_000)
                {
                    throw new InvalidOperationException($"no {count} free ports between {First} and {Last} on 127.0.0.1");
                }

                var port = Random.Shared.Next(First, Last + 1);
                var now = Environment.TickCount64;
                if (HandedOutAt.TryGetValue(port, out var at) && now - at < Reissue.TotalMilliseconds)
                {
                    continue;
                }

                var listener = new TcpListener(IPAddress.Loopback, port);
                try
                {
                    listener.Start();
                    listeners.Add(listener);
                    HandedOutAt[port] = now;
                }
                catch (SocketException)
                {
                    listener.Stop(); // taken: try another
                }
            }

            return listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port).ToArray();
        }
        finally
        {
            foreach (var listener in listeners)
            {
                listener.Stop();
            }
        }
    }
}
