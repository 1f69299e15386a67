namespace Dcache.Gateway.Resp;

/// <summary>
/// Limits and settings of the Redis-protocol front end (bind from configuration section "Resp").
/// Defaults follow Redis where Redis has a limit; where Redis is unbounded the default bounds memory per connection.
/// </summary>
public sealed class RespOptions
{
    /// <summary>Configuration section these options are usually bound from.</summary>
    public const string SectionName = "Resp";

    /// <summary>Largest bulk string a client may send (Redis's proto-max-bulk-len, 512 MiB).</summary>
    public long MaxBulkLength { get; set; } = 512L * 1024 * 1024;

    /// <summary>Most arguments in one multibulk request (Redis accepts up to INT_MAX; a million is plenty and bounded).</summary>
    public int MaxArguments { get; set; } = 1024 * 1024;

    /// <summary>Total argument bytes of one request (Redis's client-query-buffer-limit, 1 GiB).</summary>
    public long MaxRequestBytes { get; set; } = 1024L * 1024 * 1024;

    /// <summary>Longest inline command line, and longest "*"/"$" header line (Redis's PROTO_INLINE_MAX_SIZE, 64 KiB).</summary>
    public int MaxInlineLength { get; set; } = 64 * 1024;

    /// <summary>Connected clients beyond this are refused with "-ERR max number of clients reached" (Redis's maxclients).</summary>
    public int MaxClients { get; set; } = 10_000;

    /// <summary>
    /// Replies a connection has not taken yet, in bytes, beyond which the gateway closes it (at once, dropping what is
    /// buffered). The gateway stops reading a client's requests while the client is not reading replies, so this bounds
    /// what one batch of replies may hold: those written and waiting for the client, and those of the batch that arrive
    /// from the cluster meanwhile.
    /// </summary>
    public long MaxOutputBufferBytes { get; set; } = 512L * 1024 * 1024;

    /// <summary>Most commands of one connection in flight at once (one pipelined batch); the rest wait in the socket buffer.</summary>
    public int MaxPipelineDepth { get; set; } = 1024;

    /// <summary>
    /// Redis's tcp-keepalive: SO_KEEPALIVE on every client socket, the first probe after this many idle seconds, then one
    /// every third of it, and the kernel drops the connection after 3 unanswered (as Redis sets them). A client whose host
    /// vanished without closing its connection (powered off, cable pulled, state dropped by a NAT) is then closed in about
    /// twice this time, and frees its slot against <see cref="MaxClients"/>. 0 = no keepalive.
    /// </summary>
    public int TcpKeepAliveSeconds { get; set; } = 300;

    /// <summary>
    /// Redis's timeout: a client that sent nothing for this many seconds, and has no command in flight and no reply
    /// still being written, is closed; one subscribed to a channel or pattern never is. 0 = never.
    /// </summary>
    public int IdleTimeoutSeconds { get; set; }

    /// <summary>Password of the default user (Redis's requirepass); null or empty = no authentication.</summary>
    public string? RequirePass { get; set; }

    /// <summary>Checks the options; throws <see cref="ArgumentOutOfRangeException"/> naming the first bad one.</summary>
    public void Validate()
    {
        // A bulk string or a request is copied into one byte array, so neither may exceed the largest array.
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxBulkLength, 1, nameof(MaxBulkLength));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxBulkLength, Array.MaxLength, nameof(MaxBulkLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxArguments, 1, nameof(MaxArguments));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxArguments, Array.MaxLength - 1, nameof(MaxArguments));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxRequestBytes, 1, nameof(MaxRequestBytes));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(MaxRequestBytes, Array.MaxLength, nameof(MaxRequestBytes));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxInlineLength, 16, nameof(MaxInlineLength));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxClients, 1, nameof(MaxClients));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOutputBufferBytes, 1024, nameof(MaxOutputBufferBytes));
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPipelineDepth, 1, nameof(MaxPipelineDepth));
        ArgumentOutOfRangeException.ThrowIfNegative(TcpKeepAliveSeconds, nameof(TcpKeepAliveSeconds));
        // Past it the kernel refuses TCP_KEEPIDLE on every connection, and clients would get its 2-hour default.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(TcpKeepAliveSeconds, MaxTcpKeepAliveSeconds, nameof(TcpKeepAliveSeconds));
        ArgumentOutOfRangeException.ThrowIfNegative(IdleTimeoutSeconds, nameof(IdleTimeoutSeconds));
        // Past it each connection's timer could not be armed, and every connection would fail at its first wait.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(IdleTimeoutSeconds, MaxIdleTimeoutSeconds, nameof(IdleTimeoutSeconds));
    }

    /// <summary>Linux's largest TCP_KEEPIDLE (MAX_TCP_KEEPIDLE).</summary>
    public const int MaxTcpKeepAliveSeconds = 32_767;

    /// <summary>The longest a .NET timer runs, 4,294,967,294 ms (49.7 days), in whole seconds.</summary>
    public const int MaxIdleTimeoutSeconds = 4_294_967;

    internal bool AuthenticationRequired => !string.IsNullOrEmpty(RequirePass);
}
