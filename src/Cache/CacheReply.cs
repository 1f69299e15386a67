using System.Globalization;
using System.Text;

namespace Dcache.Cache;

/// <summary>Which shape a <see cref="CacheReply"/> has; these map one to one onto RESP reply types.</summary>
public enum CacheReplyKind : byte
{
    /// <summary>Never produced; the value of <c>default(CacheReply)</c>, so an uninitialised reply is recognisable.</summary>
    None = 0,
    Ok = 1,
    Nil = 2,
    Integer = 3,
    Bulk = 4,
    Error = 5,
    Array = 6,
}

/// <summary>
/// The result of a cache command: a small discriminated union (OK, nil, integer, bulk bytes, error text, array).
/// A struct so that the common replies (OK, nil, integers) cost no allocation on the apply path; the payload
/// (bulk bytes, error text or array items) lives in one reference field.
/// </summary>
/// <remarks>Bulk replies may share the state machine's stored value array; the state machine never changes a stored value's bytes (only spare room past them), so this is safe.</remarks>
public readonly struct CacheReply : IEquatable<CacheReply>
{
    private readonly object? _payload;
    private readonly long _integer;

    private CacheReply(CacheReplyKind kind, long integer, object? payload)
    {
        Kind = kind;
        _integer = integer;
        _payload = payload;
    }

    public CacheReplyKind Kind { get; }

    public static CacheReply Ok => new(CacheReplyKind.Ok, 0, null);

    public static CacheReply Nil => new(CacheReplyKind.Nil, 0, null);

    public bool IsError => Kind == CacheReplyKind.Error;

    /// <summary>The value of an Integer reply (0 for every other kind).</summary>
    public long Integer => Kind == CacheReplyKind.Integer ? _integer : 0;

    /// <summary>The bytes of a Bulk reply (empty for every other kind): the start of its array, as long as the length kept.</summary>
    public ReadOnlyMemory<byte> Bulk => _payload is byte[] bytes ? bytes.AsMemory(0, (int)_integer) : ReadOnlyMemory<byte>.Empty;

    /// <summary>The text of an Error reply, in Redis's wording (e.g. "ERR value is not an integer or out of range"); empty for every other kind.</summary>
    public string ErrorMessage => _payload as string ?? string.Empty;

    /// <summary>The items of an Array reply (empty for every other kind).</summary>
    public IReadOnlyList<CacheReply> Items => _payload as CacheReply[] ?? [];

    public static CacheReply FromInteger(long value) => new(CacheReplyKind.Integer, value, null);

    /// <summary>A Bulk reply that takes ownership of <paramref name="value"/>: the caller must not change the array afterwards.</summary>
    public static CacheReply FromBulk(byte[] value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new(CacheReplyKind.Bulk, value.Length, value);
    }

    /// <summary>
    /// A Bulk reply of a stored value, shared rather than copied when it starts its array (stored values do: a value's
    /// bytes never change, though an array may hold spare room past them).
    /// </summary>
    public static CacheReply FromBulk(ReadOnlyMemory<byte> value) =>
        System.Runtime.InteropServices.MemoryMarshal.TryGetArray(value, out var segment) && segment.Offset == 0
            ? new(CacheReplyKind.Bulk, segment.Count, segment.Array)
            : new(CacheReplyKind.Bulk, value.Length, value.ToArray());

    public static CacheReply FromError(string message)
    {
        ArgumentException.ThrowIfNullOrEmpty(message);
        return new(CacheReplyKind.Error, 0, message);
    }

    /// <summary>An Array reply that takes ownership of <paramref name="items"/>.</summary>
    public static CacheReply FromArray(CacheReply[] items)
    {
        ArgumentNullException.ThrowIfNull(items);
        return new(CacheReplyKind.Array, 0, items);
    }

    public bool Equals(CacheReply other)
    {
        if (Kind != other.Kind)
        {
            return false;
        }

        return Kind switch
        {
            CacheReplyKind.Integer => _integer == other._integer,
            CacheReplyKind.Bulk => Bulk.Span.SequenceEqual(other.Bulk.Span),
            CacheReplyKind.Error => string.Equals(ErrorMessage, other.ErrorMessage, StringComparison.Ordinal),
            CacheReplyKind.Array => ItemsEqual((CacheReply[])_payload!, (CacheReply[])other._payload!),
            _ => true,
        };
    }

    public override bool Equals(object? obj) => obj is CacheReply other && Equals(other);

    public override int GetHashCode() => Kind switch
    {
        CacheReplyKind.Integer => HashCode.Combine(Kind, _integer),
        CacheReplyKind.Bulk => HashCode.Combine(Kind, Bulk.Length),
        CacheReplyKind.Error => HashCode.Combine(Kind, StringComparer.Ordinal.GetHashCode(ErrorMessage)),
        CacheReplyKind.Array => HashCode.Combine(Kind, Items.Count),
        _ => Kind.GetHashCode(),
    };

    public static bool operator ==(CacheReply left, CacheReply right) => left.Equals(right);

    public static bool operator !=(CacheReply left, CacheReply right) => !left.Equals(right);

    /// <summary>A redis-cli-like rendering, for test messages and logs.</summary>
    public override string ToString() => Kind switch
    {
        CacheReplyKind.Ok => "OK",
        CacheReplyKind.Nil => "(nil)",
        CacheReplyKind.Integer => string.Create(CultureInfo.InvariantCulture, $"(integer) {_integer}"),
        CacheReplyKind.Bulk => "\"" + Encoding.UTF8.GetString(Bulk.Span) + "\"",
        CacheReplyKind.Error => "(error) " + ErrorMessage,
        CacheReplyKind.Array => "[" + string.Join(", ", Items) + "]",
        _ => "(none)",
    };

    private static bool ItemsEqual(CacheReply[] left, CacheReply[] right)
    {
        if (left.Length != right.Length)
        {
            return false;
        }

        for (var i = 0; i < left.Length; i++)
        {
            if (!left[i].Equals(right[i]))
            {
                return false;
            }
        }

        return true;
    }
}

/// <summary>Error texts, worded as Redis words them so that clients and their tests recognise them.</summary>
public static class CacheErrors
{
    public const string NotAnInteger = "ERR value is not an integer or out of range";
    public const string IncrementOverflow = "ERR increment or decrement would overflow";
    public const string StaleSessionSequence = "ERR stale session sequence";
    public const string NotAFloat = "ERR value is not a valid float";
    public const string FloatOverflow = "ERR increment would produce NaN or Infinity";
    public const string NoSuchKey = "ERR no such key";

    /// <summary>APPEND or SETRANGE would make the value longer than 512 MiB (Redis 7.0's checkStringLength).</summary>
    public const string StringTooLong = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

    /// <summary>
    /// What entries older than format 6 reply instead of <see cref="StringTooLong"/> (the text earlier builds gave, which
    /// differs from Redis's): kept for them, since a session's last reply is replicated state.
    /// </summary>
    public const string StringTooLongBeforeFormat6 = "ERR string exceeds maximum allowed size (proto_max_bulk_len)";

    /// <summary>COPY of a key onto itself.</summary>
    public const string SameObject = "ERR source and destination objects are the same";

    /// <summary>
    /// What a retry of a write gets when the write's reply was too large for its session to keep
    /// (<see cref="CacheCommand.KeepsLargeRepliesAsErrors"/>): the write applied, once; its reply is gone.
    /// </summary>
    public const string ReplyNotKept = "ERR the write was applied, but its reply was too large to keep for a retry; read the keys again";

    /// <summary>A write past its session's first sequence number, for a session the cluster no longer has: not applied.</summary>
    public const string SessionExpired = "ERR session expired";
    public const string OutOfMemory = "OOM command not allowed when used memory > 'maxmemory'.";
    /// <summary>How the reply to a malformed entry begins; the rest names the problem.</summary>
    public const string MalformedEntryPrefix = "ERR Malformed cache command: ";
}
