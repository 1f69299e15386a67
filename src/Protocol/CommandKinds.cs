namespace Dcache.Protocol.Cache;

/// <summary>What the gateway and the nodes must agree on about a command, kept next to the generated type so there is one list.</summary>
public sealed partial class Command
{
    /// <summary>
    /// True for the operations that change the cache: the leader proposes them under the command's session, and the
    /// gateway routes them to the leader and never re-sends one whose outcome it does not know. False for reads.
    /// </summary>
    public bool IsWrite => OpCase is OpOneofCase.Set or OpOneofCase.Del or OpOneofCase.Mset or OpOneofCase.IncrBy
        or OpOneofCase.Expire or OpOneofCase.Persist or OpOneofCase.RegisterSession or OpOneofCase.Getdel
        or OpOneofCase.Getex or OpOneofCase.Append or OpOneofCase.IncrByFloat or OpOneofCase.Msetnx
        or OpOneofCase.Flushall or OpOneofCase.Rename or OpOneofCase.Setrange or OpOneofCase.Copy
        or OpOneofCase.Transaction;
}
