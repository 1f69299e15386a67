using Dcache.Gateway.Resp;

namespace Dcache.Gateway.Commands;

/// <summary>
/// Runs one request against the table with Redis 7.0's checks in Redis's order (processCommand): unknown command,
/// unknown subcommand, arity, authentication, subscriber context; then the handler.
/// </summary>
internal static class CommandDispatcher
{
    // What Redis's CLIENT LIST shows as cmd for a request that names no command it knows.
    private const string UnknownCommandName = "NULL";

    /// <summary>
    /// The command a request names (null when unknown) and, when it must not run, the error that refuses it (null
    /// when it may run). Every request counts as the connection's last command (CLIENT LIST's cmd and idle), whether it
    /// then runs, is queued by MULTI or is refused, as Redis records it at lookup: an unknown command or subcommand as
    /// "NULL".
    /// </summary>
    public static CommandSpec? Resolve(CommandContext context, RespRequest request, out string? error)
    {
        error = null;
        var client = context.Client;
        client.LastCommandAtMs = context.NowMs;
        client.LastCommandName = UnknownCommandName;
        var spec = CommandTable.Find(request[0]);
        if (spec is null)
        {
            error = RedisErrors.UnknownCommand(request);
            return null;
        }

        if (spec.Subcommands is not null && request.Count >= 2)
        {
            var subcommand = CommandTable.FindSubcommand(spec, request[1]);
            if (subcommand is null)
            {
                error = RedisErrors.UnknownSubcommand(request.TextUpToNul(1), spec.Name);
                return spec;
            }

            spec = subcommand;
        }

        client.LastCommandName = spec.Name;
        if (!spec.ArityMatches(request.Count))
        {
            error = RedisErrors.WrongArity(spec.Name);
        }
        else if (!client.Authenticated && context.Options.AuthenticationRequired && (spec.Flags & CommandFlags.NoAuth) == 0)
        {
            error = RedisErrors.NoAuth;
        }
        else if (client.InSubscriberContext && (spec.Flags & CommandFlags.SubscriberContext) == 0)
        {
            error = RedisErrors.NotInSubscriberContext(spec.Name);
        }

        return spec;
    }

    public static PendingReply Execute(CommandContext context, CommandSpec spec, RespRequest request) => spec.Handler(context, request);
}
