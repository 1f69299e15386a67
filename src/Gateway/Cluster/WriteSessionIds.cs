using System.Security.Cryptography;

namespace Dcache.Gateway.Cluster;

/// <summary>Client ids of write sessions: a random nonzero 64-bit base per gateway process plus a counter.</summary>
/// <remarks>The cluster client takes a new one itself when the cluster says a write's session expired.</remarks>
internal static class WriteSessionIds
{
    private static readonly ulong Base = RandomBase();
    private static long _counter;

    public static ulong Next()
    {
        while (true)
        {
            var id = unchecked(Base + (ulong)Interlocked.Increment(ref _counter));
            if (id != 0)
            {
                return id;
            }
        }
    }

    private static ulong RandomBase()
    {
        Span<byte> bytes = stackalloc byte[8];
        RandomNumberGenerator.Fill(bytes);
        return BitConverter.ToUInt64(bytes);
    }
}
