using System.Net;
using System.Net.Sockets;

namespace Dcache.Integration.Tests.Support;

/// <summary>Ephemeral ports on 127.0.0.1, chosen by the OS.</summary>
internal static class FreePorts
{
    public static int[] Allocate(int count)
    {
        // Hold all listeners open until every port is chosen, so the OS hands out distinct ones.
        var listeners = new List<TcpListener>();
        try
        {
            for (var i = 0; i < count; i++)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listener.Start();
                listeners.Add(listener);
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
