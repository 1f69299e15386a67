using System.Text;

namespace Dcache.Gateway.Commands;

/// <summary>Error texts worded exactly as Redis 7.0 words them (server.c, networking.c, t_string.c, expire.c).</summary>
internal static class RedisErrors
{
    public const string Syntax = "ERR syntax error";
    public const string NotAnInteger = "ERR value is not an integer or out of range";
    public const string NotAn32BitInteger = "ERR value is out of range, value must between -2147483648 and 2147483647"; // getIntFromObjectOrReply (SELECT)
    public const string DecrementOverflow = "ERR decrement would overflow";
    public const string NoAuth = "NOAUTH Authentication required.";
    public const string WrongPass = "WRONGPASS invalid username-password pair or user is disabled.";
    public const string AuthWithoutPassword = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";
    public const string HelloNoAuth = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";
    public const string NoProto = "NOPROTO unsupported protocol version";
    public const string ProtocolVersionNotInteger = "ERR Protocol version is not an integer or out of range";
    public const string DbIndexOutOfRange = "ERR DB index is out of range";
    public const string ClusterDisabled = "ERR This instance has cluster support disabled";
    public const string ClientNameInvalid = "ERR Client names cannot contain spaces, newlines or special characters.";
    public const string MaxClients = "ERR max number of clients reached";
    public const string ExpireNxWithOthers = "ERR NX and XX, GT or LT options at the same time are not compatible";
    public const string ExpireGtAndLt = "ERR GT and LT options at the same time are not compatible";
    public const string NoConfigFile = "ERR The server is running without a config file";
    public const string InvalidCursor = "ERR invalid cursor";
    public const string OffsetOutOfRange = "ERR offset is out of range"; // SETRANGE
    public const string StringTooLong = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"; // checkStringLength
    public const string SameObject = "ERR source and destination objects are the same"; // COPY

    /// <summary>The longest value a key may hold, 512 MiB as Redis's default proto-max-bulk-len (the nodes' limit too).</summary>
    public const long MaxStringLength = 512L * 1024 * 1024;

    public static string WrongArity(string commandName) => $"ERR wrong number of arguments for '{commandName}' command";

    public static string InvalidExpireTime(string commandName) => $"ERR invalid expire time in '{commandName}' command";

    public static string UnsupportedOption(string option) => $"ERR Unsupported option {option}";

    /// <summary>Redis's reply to an unknown subcommand: the subcommand as sent (up to 128 bytes; <paramref name="subcommand"/> already stops at a NUL byte, as C's %s does).</summary>
    public static string UnknownSubcommand(string subcommand, string container) =>
        $"ERR unknown subcommand '{Truncate(subcommand, 128)}'. Try {container.ToUpperInvariant()} HELP.";

    public static string NotInSubscriberContext(string commandName) =>
        $"ERR Can't execute '{commandName}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

    /// <summary>
    /// Redis's "unknown command" reply (processCommand): the name as sent (up to 128 bytes) and the first arguments,
    /// each quoted and followed by a space, until the list reaches 128 bytes. Like C's %s, text stops at a NUL byte.
    /// </summary>
    public static string UnknownCommand(Resp.RespRequest request)
    {
        var arguments = new StringBuilder();
        for (var i = 1; i < request.Count && arguments.Length < 128; i++)
        {
            var budget = 128 - arguments.Length;
            arguments.Append('\'').Append(Truncate(request.TextUpToNul(i), budget)).Append("' ");
        }

        return $"ERR unknown command '{Truncate(request.TextUpToNul(0), 128)}', with args beginning with: {arguments}";
    }

    private static string Truncate(string text, int maxLength) => text.Length <= maxLength ? text : text[..maxLength];
}
