using System.Diagnostics;
using System.Globalization;

namespace Dcache.Chaos;

internal enum OpKind
{
    /// <summary>SET of a unique value on a shared register key.</summary>
    Set,
    Get,
    Del,
    /// <summary>INCR of a counter key.</summary>
    Incr,
    /// <summary>SET ... PX of a unique value on an expiring key.</summary>
    SetExpiring,
    /// <summary>GET of an expiring key (checked against the expiry, not by the register model).</summary>
    GetExpiring,
    /// <summary>SET of a key written exactly once (checked for loss after the whole-cluster restart).</summary>
    SetUnique,

    /// <summary>The bank workload's transfer between two accounts: WATCH, MGET, MULTI, DECRBY, INCRBY, EXEC (<see cref="BankClient"/>).</summary>
    Transfer,

    /// <summary>The bank workload's read of every account with one MGET.</summary>
    ReadAccounts,

    /// <summary>The bank workload's read of every account with an MGET inside MULTI/EXEC.</summary>
    ReadAccountsInTransaction,
}

internal enum OpStatus
{
    /// <summary>Answered: the result is known.</summary>
    Ok,

    /// <summary>Not applied (TRYAGAIN), or a read that was not served: left out of the history.</summary>
    Failed,

    /// <summary>A write that may or may not have applied (UNKNOWN, timeout, broken connection).</summary>
    Unknown,
}

/// <summary>One client operation as the client saw it. Times are <see cref="Stopwatch"/> timestamps.</summary>
internal sealed class ChaosOp(int client, OpKind kind, string key, string? input, int ttlMs = 0)
{
    public int Client { get; } = client;

    public OpKind Kind { get; } = kind;

    public string Key { get; } = key;

    public string? Input { get; } = input;

    public int TtlMs { get; } = ttlMs;

    public string? Output { get; set; }

    public long Call { get; set; }

    public long Return { get; set; }

    public OpStatus Status { get; set; }

    /// <summary>The error the client got, if any.</summary>
    public string? Error { get; set; }

    /// <summary>For the bank workload's operations: the balances read and, for a transfer, what its EXEC answered.</summary>
    public BankDetail? Bank { get; set; }

    public bool IsWrite => Kind is OpKind.Set or OpKind.Del or OpKind.Incr or OpKind.SetExpiring or OpKind.SetUnique or OpKind.Transfer;

    public static double Milliseconds(long timestamp) => timestamp * 1000.0 / Stopwatch.Frequency;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Milliseconds(Call),10:F1} {(Status == OpStatus.Unknown ? "       inf" : Milliseconds(Return).ToString("F1", CultureInfo.InvariantCulture).PadLeft(10))} c{Client} {Kind} {Key} in={Input ?? "-"}{(TtlMs > 0 ? $" px={TtlMs}" : "")} -> {Status} {Output ?? "nil"}{(Error is null ? "" : " (" + Error + ")")}");
}

/// <summary>While the gateway was cut off from some nodes (Stopwatch timestamps), and from whom.</summary>
internal sealed record GatewayCutWindow(long From, long To, string What);
