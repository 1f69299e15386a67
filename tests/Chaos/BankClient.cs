using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using Dcache.Gateway.Tests.Support;

namespace Dcache.Chaos;

/// <summary>
/// What a bank operation saw: the accounts it read, their balances as the reply gave them (null for nil), and for an
/// applied transfer what its EXEC answered for the two accounts (an integer's text, or an error in its slot).
/// </summary>
internal sealed record BankDetail(IReadOnlyList<string> Accounts, IReadOnlyList<string?> Balances, IReadOnlyList<string>? Exec = null);

/// <summary>
/// One client of the bank workload (<c>--workload bank</c>): a transferer moves random amounts between two random
/// accounts with <c>WATCH a b; MGET a b; MULTI; DECRBY a x; INCRBY b x; EXEC</c>, declining (UNWATCH) when the balance
/// read under WATCH is short, so that no account can go negative; a reader reads every account with one MGET or with
/// an MGET inside MULTI/EXEC, half and half. Clients 2, 5, 8, ... read, the others transfer. One operation at a time,
/// bounded in count and in time; <see cref="BankChecks"/> judges the history.
/// </summary>
internal sealed class BankClient(int id, int gatewayPort, int seed) : IChaosClient
{
    public static readonly string[] Accounts = [.. Enumerable.Range(0, 8).Select(i => $"acct{i}")];

    public const long InitialBalance = 100;

    public static readonly long Total = InitialBalance * Accounts.Length;

    private const int MaxAmount = 30;

    private readonly Random _random = new(seed);
    private GatewayConnection? _connection;
    private long _acknowledgedTransfers;
    private long _lastAcknowledgedAt;

    public List<ChaosOp> History { get; } = [];

    public bool IsReader => id % 3 == 2;

    /// <summary>Transfers whose EXEC was answered with the two new balances so far; read by the harness while the client runs.</summary>
    public long AcknowledgedTransfers => Interlocked.Read(ref _acknowledgedTransfers);

    /// <summary>When the last acknowledged transfer returned (a <see cref="Stopwatch"/> timestamp; 0 before the first).</summary>
    public long LastAcknowledgedAt => Interlocked.Read(ref _lastAcknowledgedAt);

    /// <summary>Sets every account to <see cref="InitialBalance"/> with one MSET, before any fault: the only write that is not a transfer.</summary>
    public static async Task OpenAccountsAsync(int gatewayPort, TimeSpan deadline)
    {
        string[] mset = ["MSET", .. Accounts.SelectMany(a => new[] { a, InitialBalance.ToString(CultureInfo.InvariantCulture) })];
        var (reply, _, _) = await ChaosClient.UntilAnsweredAsync(gatewayPort, deadline, mset).ConfigureAwait(false);
        if (reply.Type != '+' || reply.Text != "OK")
        {
            throw new InvalidOperationException($"MSET of the bank's accounts answered {reply}");
        }
    }

    public async Task RunAsync(CancellationToken stop)
    {
        try
        {
            for (var i = 0; i < ChaosClient.MaxOperations && !stop.IsCancellationRequested; i++)
            {
                var op = IsReader ? await ReadAsync(_random.Next(2) == 0).ConfigureAwait(false) : await TransferAsync().ConfigureAwait(false);
                History.Add(op);
                if (op.Status != OpStatus.Ok)
                {
                    // Not applied, aborted by WATCH, declined or failing: retry later, without hammering a failing cluster.
                    await Task.Delay(10, CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            _connection?.Dispose();
        }
    }

    private async Task<ChaosOp> TransferAsync()
    {
        var from = _random.Next(Accounts.Length);
        var to = (from + 1 + _random.Next(Accounts.Length - 1)) % Accounts.Length;
        var amount = 1 + _random.Next(MaxAmount);
        string[] accounts = [Accounts[from], Accounts[to]];
        var op = new ChaosOp(id, OpKind.Transfer, $"{accounts[0]}->{accounts[1]}", amount.ToString(CultureInfo.InvariantCulture));
        await ExecuteAsync(op, async send =>
        {
            if (!Expect(op, await send(["WATCH", .. accounts]), "+OK"))
            {
                return;
            }

            var read = await send(["MGET", .. accounts]);
            if (Balances(op, read, accounts) is not { } balances)
            {
                return;
            }

            op.Bank = new BankDetail(accounts, balances);
            if (!long.TryParse(balances[0], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var balance) || balance < amount)
            {
                op.Status = OpStatus.Failed;
                op.Output = $"declined: {accounts[0]} holds {balances[0] ?? "nil"}";
                Expect(op, await send(["UNWATCH"]), "+OK");
                return;
            }

            if (!Expect(op, await send(["MULTI"]), "+OK")
                || !Expect(op, await send(["DECRBY", accounts[0], op.Input!]), "+QUEUED")
                || !Expect(op, await send(["INCRBY", accounts[1], op.Input!]), "+QUEUED"))
            {
                return;
            }

            op.Status = OpStatus.Unknown; // from here on a broken connection or a timeout leaves the outcome unknown
            var exec = await send(["EXEC"]);
            if (exec.IsError)
            {
                Error(op, exec);
            }
            else if (exec.IsNull)
            {
                op.Status = OpStatus.Failed;
                op.Output = "aborted: a watched account changed";
            }
            else if (exec.Type == '*' && exec.Items is { Count: 2 } slots)
            {
                op.Status = OpStatus.Ok;
                op.Output = "applied";
                op.Bank = op.Bank with { Exec = [.. slots.Select(s => s.Type == ':' ? s.Integer.ToString(CultureInfo.InvariantCulture) : s.ToString())] };
            }
            else
            {
                Unexpected(op, exec);
            }
        }).ConfigureAwait(false);

        if (op.Status == OpStatus.Ok)
        {
            Interlocked.Increment(ref _acknowledgedTransfers);
            Interlocked.Exchange(ref _lastAcknowledgedAt, op.Return);
        }

        return op;
    }

    private async Task<ChaosOp> ReadAsync(bool inTransaction)
    {
        string[] mget = ["MGET", .. Accounts];
        var op = new ChaosOp(id, inTransaction ? OpKind.ReadAccountsInTransaction : OpKind.ReadAccounts, "accounts", null);
        await ExecuteAsync(op, async send =>
        {
            RespValue reply;
            if (inTransaction)
            {
                if (!Expect(op, await send(["MULTI"]), "+OK") || !Expect(op, await send(mget), "+QUEUED"))
                {
                    return;
                }

                var exec = await send(["EXEC"]);
                if (exec.IsError)
                {
                    Error(op, exec);
                    return;
                }

                if (exec.Type != '*' || exec.Items is not { Count: 1 } slots)
                {
                    Unexpected(op, exec);
                    return;
                }

                reply = slots[0];
            }
            else
            {
                reply = await send(mget);
            }

            if (Balances(op, reply, Accounts) is { } balances)
            {
                op.Status = OpStatus.Ok;
                op.Bank = new BankDetail(Accounts, balances);
                op.Output = string.Join(' ', balances.Select(b => b ?? "nil"));
            }
        }).ConfigureAwait(false);
        return op;
    }

    /// <summary>
    /// Runs one operation's commands on the client's connection (opened if need be), timing it. A broken connection
    /// or a timeout leaves the op as its commands left it (Unknown once EXEC of a transfer was sent, else Failed); the
    /// connection is dropped after any error or unexpected reply, which also ends a WATCH or a MULTI left open.
    /// </summary>
    private async Task ExecuteAsync(ChaosOp op, Func<Func<string[], Task<RespValue>>, Task> commands)
    {
        op.Call = Stopwatch.GetTimestamp();
        op.Status = OpStatus.Failed;
        if (_connection is null)
        {
            try
            {
                _connection = await GatewayConnection.OpenAsync(gatewayPort, CancellationToken.None).ConfigureAwait(false);
            }
            catch (SocketException ex)
            {
                op.Return = Stopwatch.GetTimestamp();
                op.Error = $"{nameof(SocketException)} (not sent): {ex.Message}";
                await Task.Delay(50).ConfigureAwait(false); // the gateway is down: do not log thousands of refusals
                return;
            }
        }

        var connection = _connection;
        try
        {
            await commands(arguments => connection.CommandAsync(ChaosClient.ReplyTimeout, arguments)).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is TimeoutException or IOException or SocketException or FormatException)
        {
            op.Error = ex.GetType().Name + ": " + ex.Message;
        }

        op.Return = Stopwatch.GetTimestamp();
        if (op.Error is not null)
        {
            _connection.Dispose();
            _connection = null;
        }
    }

    /// <summary>True when the reply is the expected simple string; otherwise records the error or the unexpected reply.</summary>
    private static bool Expect(ChaosOp op, RespValue reply, string expected)
    {
        if (reply.ToString() == expected)
        {
            return true;
        }

        if (reply.IsError)
        {
            Error(op, reply);
        }
        else
        {
            Unexpected(op, reply);
        }

        return false;
    }

    /// <summary>An MGET's reply as balances (null for nil), or null (recorded) when it is not an array of that many strings.</summary>
    private static List<string?>? Balances(ChaosOp op, RespValue reply, IReadOnlyList<string> accounts)
    {
        if (reply.Type == '*' && reply.Items is { } items && items.Count == accounts.Count && items.All(i => i.Type is '$' or '_'))
        {
            return [.. items.Select(i => i.IsNull ? null : i.Text)];
        }

        if (reply.IsError)
        {
            Error(op, reply);
        }
        else
        {
            Unexpected(op, reply);
        }

        return null;
    }

    /// <summary>An error reply: UNKNOWN leaves a transfer's outcome unknown; anything else means not applied (or not served).</summary>
    private static void Error(ChaosOp op, RespValue reply)
    {
        op.Error = reply.Text ?? "";
        op.Status = op.Status == OpStatus.Unknown && op.Error.StartsWith("UNKNOWN ", StringComparison.Ordinal) ? OpStatus.Unknown : OpStatus.Failed;
    }

    /// <summary>A reply no documented behaviour gives: an error the checks report (and the connection is dropped).</summary>
    private static void Unexpected(ChaosOp op, RespValue reply)
    {
        op.Error = $"unexpected reply {reply}";
        op.Status = op.Status == OpStatus.Unknown ? OpStatus.Unknown : OpStatus.Failed;
    }
}
