using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Dcache.Node.Transport;

/// <summary>
/// The cluster id and shared secret every gRPC call carries in its headers; and, on the calls between nodes, the
/// settings every replica's cache must share (<paramref name="cacheSettings"/>, see <see cref="CacheSettingsHeader"/>).
/// </summary>
public sealed class ClusterCredentials(string clusterId, string secret, string cacheSettings = "", string foundingLog = "", Action<string>? foundingLogAdopted = null)
{
    public const string ClusterIdHeader = "dcache-cluster-id";
    public const string SecretHeader = "dcache-secret";
    public const string FromHeader = "dcache-from";

    /// <summary>The sender's own gRPC address, so that a node that does not know it yet (one joining) can answer.</summary>
    public const string FromAddressHeader = "dcache-from-address";

    /// <summary>The newest log entry format the sender's build reads (absent: 1, a build from before it was sent).</summary>
    public const string EntryFormatHeader = "dcache-entry-format";

    /// <summary>
    /// The settings that decide what a replica's cache does with the entries it applies, besides the entries themselves
    /// (the memory cap, which keys eviction removes; the session timeout, which retries apply): replicas that differ in
    /// them diverge for good. Nodes refuse Raft traffic from a node whose settings differ (absent: a build from before
    /// the header, not checked).
    /// </summary>
    public const string CacheSettingsHeader = "dcache-cache-settings";

    /// <summary>
    /// What the sender's log was founded from (<see cref="Storage.FoundingLog"/>). Nodes refuse Raft traffic from a node
    /// whose log was founded from something else (absent on either side: a node that joined, or one founded by a build
    /// from before it was recorded, not checked).
    /// </summary>
    public const string FoundingLogHeader = "dcache-founding-log";

    private readonly byte[] _secret = Encoding.UTF8.GetBytes(secret);

    private string _foundingLog = foundingLog;

    // Refusals already logged, per peer: a refused peer redials about once a second.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<ulong, string> _refusalsLogged = new();

    /// <summary>This node's <see cref="FoundingLogHeader"/> ("" when unknown, and in tools).</summary>
    public string FoundingLog => Volatile.Read(ref _foundingLog);

    /// <summary>
    /// A node with no founding record (one that joined) takes that of the first leader whose traffic it accepts, and
    /// records it (<paramref name="foundingLogAdopted"/>): from then on it refuses a peer founded otherwise too, so the
    /// check outlives the founding members. True when it was adopted now.
    /// </summary>
    public bool AdoptFoundingLog(string leaders)
    {
        if (leaders.Length == 0 || Interlocked.CompareExchange(ref _foundingLog, leaders, "") != "")
        {
            return false;
        }

        foundingLogAdopted?.Invoke(leaders);
        return true;
    }

    /// <summary>Whether <paramref name="reason"/> is the first refusal of <paramref name="peer"/> to log (not the one logged last).</summary>
    public bool FirstRefusal(ulong peer, string reason)
    {
        if (_refusalsLogged.TryGetValue(peer, out var last) && last == reason)
        {
            return false;
        }

        _refusalsLogged[peer] = reason;
        return true;
    }

    /// <summary>This node's cache settings as <see cref="CacheSettingsHeader"/> carries them ("" in tools, which apply nothing).</summary>
    public string CacheSettings { get; } = cacheSettings;

    public string ClusterId { get; } = clusterId;

    public string Secret { get; } = secret;

    public Metadata ToHeaders(ulong? from = null, string? fromAddress = null, byte? entryFormat = null)
    {
        var headers = new Metadata { { ClusterIdHeader, ClusterId }, { SecretHeader, Secret } };
        if (from is { } id)
        {
            headers.Add(FromHeader, id.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (!string.IsNullOrEmpty(fromAddress))
        {
            headers.Add(FromAddressHeader, fromAddress);
        }

        if (entryFormat is { } format)
        {
            headers.Add(EntryFormatHeader, format.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }

        if (from is not null && CacheSettings.Length > 0)
        {
            headers.Add(CacheSettingsHeader, CacheSettings);
        }

        if (from is not null && FoundingLog.Length > 0)
        {
            headers.Add(FoundingLogHeader, FoundingLog);
        }

        return headers;
    }

    /// <summary>Throws the RpcException a caller with wrong credentials gets.</summary>
    public void Verify(Metadata headers)
    {
        var cluster = headers.GetValue(ClusterIdHeader);
        if (cluster != ClusterId)
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"wrong cluster id '{cluster}': this node belongs to cluster '{ClusterId}'"));
        }

        var secret = Encoding.UTF8.GetBytes(headers.GetValue(SecretHeader) ?? "");
        if (!CryptographicOperations.FixedTimeEquals(secret, _secret))
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, "wrong or missing cluster secret"));
        }
    }
}

/// <summary>Refuses every call whose headers do not carry this cluster's id and secret, before any service code runs.</summary>
public sealed class ClusterAuthInterceptor(ClusterCredentials credentials) : Interceptor
{
    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        credentials.Verify(context.RequestHeaders);
        return continuation(request, context);
    }

    public override Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        credentials.Verify(context.RequestHeaders);
        return continuation(requestStream, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        credentials.Verify(context.RequestHeaders);
        return continuation(request, responseStream, context);
    }

    public override Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        credentials.Verify(context.RequestHeaders);
        return continuation(requestStream, responseStream, context);
    }
}
