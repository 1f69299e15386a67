using System.Diagnostics;
using System.Reflection;
using System.Security.Cryptography;

namespace Dcache.Gateway.Commands;

/// <summary>What this gateway process says about itself in HELLO and INFO.</summary>
internal static class ServerIdentity
{
    /// <summary>
    /// The Redis version clients are told: the gateway implements Redis 7.0's wording and options for its commands
    /// (plus CLIENT SETINFO from 7.2), and clients pick features by this number.
    /// </summary>
    public const string RedisVersion = "7.0.15";

    public static readonly string DcacheVersion =
        typeof(ServerIdentity).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(ServerIdentity).Assembly.GetName().Version?.ToString()
        ?? "0.0.0";

    /// <summary>A random 40-hex-digit id per process, like Redis's run_id.</summary>
    public static readonly string RunId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(20));

    public static readonly long StartedAtTimestamp = Stopwatch.GetTimestamp();

    public static TimeSpan Uptime => Stopwatch.GetElapsedTime(StartedAtTimestamp);
}
