using Dcache.Raft;
using Google.Protobuf;
using Wire = Dcache.Protocol.Raft;

namespace Dcache.Node.Transport;

/// <summary>Converts Raft messages to and from their wire form, rejecting wire messages that make no sense.</summary>
public static class RaftMessageCodec
{
    public static Wire.RaftMessage ToWire(Message message) => ToWire(message, null);

    /// <summary>
    /// As <see cref="ToWire(Message)"/>, reusing the wire entries <paramref name="recent"/> made for an earlier message.
    /// A leader sends each follower the same new entries in the same round: converted once, they are shared (the wire
    /// messages only read them). An entry is named by index and term, which by the Log Matching property fix its bytes.
    /// </summary>
    public static Wire.RaftMessage ToWire(Message message, RecentWireEntries? recent) => ToWire(message, recent, readTimeMs: 0);

    /// <summary>
    /// As <see cref="ToWire(Message, RecentWireEntries)"/>; a ReadIndex response also carries <paramref name="readTimeMs"/>
    /// (the leader's time when it answered; 0: none). The Raft core never sees it: the host stamps it and reads it.
    /// </summary>
    public static Wire.RaftMessage ToWire(Message message, RecentWireEntries? recent, long readTimeMs)
    {
        var wire = new Wire.RaftMessage
        {
            Type = (Wire.MessageType)message.Type,
            From = message.From,
            To = message.To,
            Term = message.Term,
            LogTerm = message.LogTerm,
            Index = message.Index,
            Commit = message.Commit,
            Reject = message.Reject,
            RejectHint = message.RejectHint,
            Context = message.Context,
            LeadershipTransfer = message.LeadershipTransfer,
        };
        var entries = message.Entries;
        wire.Entries.Capacity = entries.Count;
        foreach (var entry in entries)
        {
            wire.Entries.Add(recent?.Find(entry.Index, entry.Term) ?? new Wire.Entry
            {
                Index = entry.Index,
                Term = entry.Term,
                Type = (Wire.EntryType)entry.Type,
                Data = UnsafeByteOperations.UnsafeWrap(entry.Data),
            });
        }

        if (entries.Count > 0)
        {
            recent?.Remember(wire.Entries);
        }

        if (message.Snapshot is { } snapshot)
        {
            wire.Snapshot = ToWire(snapshot);
        }

        if (readTimeMs > 0 && message.Type == MessageType.ReadIndexResponse)
        {
            wire.ReadTimeMs = readTimeMs;
        }

        return wire;
    }

    public static Wire.SnapshotMetadata ToWire(SnapshotMetadata snapshot)
    {
        var wire = new Wire.SnapshotMetadata { Index = snapshot.Index, Term = snapshot.Term, Membership = new Wire.Membership() };
        wire.Membership.Voters.AddRange(snapshot.Membership.Voters);
        wire.Membership.Learners.AddRange(snapshot.Membership.Learners);
        wire.Membership.Contexts.Add(snapshot.Membership.Contexts);
        wire.Membership.UpdatedContexts.AddRange(snapshot.Membership.UpdatedContexts);
        return wire;
    }

    /// <summary>The Raft message carried by <paramref name="wire"/>; a <see cref="FormatException"/> says what is wrong with a malformed one.</summary>
    public static Message FromWire(Wire.RaftMessage wire)
    {
        if (wire.Type is < Wire.MessageType.Append or > Wire.MessageType.ReadIndexResponse)
        {
            throw new FormatException($"unknown message type {(int)wire.Type}");
        }

        if (wire.From == 0 || wire.To == 0)
        {
            throw new FormatException("message without sender or receiver");
        }

        var entries = new Entry[wire.Entries.Count];
        var expectedIndex = wire.Index + 1;
        for (var i = 0; i < entries.Length; i++)
        {
            var e = wire.Entries[i];
            if (e.Type is not (Wire.EntryType.Normal or Wire.EntryType.ConfChange))
            {
                throw new FormatException($"entry {e.Index} has unknown type {(int)e.Type}");
            }

            if (e.Index != expectedIndex++)
            {
                throw new FormatException($"entries are not contiguous after index {wire.Index}");
            }

            if (e.Term == 0 || e.Term > wire.Term)
            {
                throw new FormatException($"entry {e.Index} has term {e.Term} outside (0, {wire.Term}]");
            }

            if (e.Type == Wire.EntryType.ConfChange && (e.Data.Length < ConfChange.EncodedLength || e.Data.Length > ConfChange.EncodedLength + ConfChange.MaxContextBytes))
            {
                throw new FormatException($"entry {e.Index} is a malformed membership change");
            }

            entries[i] = new Entry(e.Index, e.Term, (EntryType)e.Type, e.Data.Memory);
        }

        return new Message
        {
            Type = (MessageType)wire.Type,
            From = wire.From,
            To = wire.To,
            Term = wire.Term,
            LogTerm = wire.LogTerm,
            Index = wire.Index,
            Commit = wire.Commit,
            Entries = entries,
            Reject = wire.Reject,
            RejectHint = wire.RejectHint,
            Context = wire.Context,
            LeadershipTransfer = wire.LeadershipTransfer,
            Snapshot = wire.Snapshot is null ? null : FromWire(wire.Snapshot),
        };
    }

    /// <summary>The leader's time a ReadIndex response carries (see <see cref="ToWire(Message, RecentWireEntries, long)"/>); 0 when it carries none, as from a build from before it.</summary>
    public static long ReadTimeOf(Wire.RaftMessage wire) =>
        wire.Type == Wire.MessageType.ReadIndexResponse && wire.HasReadTimeMs && wire.ReadTimeMs > 0 ? wire.ReadTimeMs : 0;

    public static SnapshotMetadata FromWire(Wire.SnapshotMetadata wire)
    {
        var membership = wire.Membership ?? throw new FormatException("snapshot metadata without membership");
        if (membership.Voters.Any(v => v == 0) || membership.Learners.Any(l => l == 0))
        {
            throw new FormatException("membership names node 0");
        }

        if (membership.UpdatedContexts.Any(id => !membership.Contexts.ContainsKey(id)))
        {
            throw new FormatException("membership marks an address as updated that it does not hold");
        }

        return new SnapshotMetadata(wire.Index, wire.Term, Membership.Of(membership.Voters, membership.Learners, membership.Contexts, membership.UpdatedContexts));
    }
}

/// <summary>
/// The wire entries of the last message that carried any, for <see cref="RaftMessageCodec.ToWire(Message, RecentWireEntries)"/>.
/// Not thread-safe: one sender (the driver loop) uses it.
/// </summary>
public sealed class RecentWireEntries
{
    private Wire.Entry[] _entries = [];
    private int _count;
    private ulong _firstIndex;

    public Wire.Entry? Find(ulong index, ulong term)
    {
        if (index < _firstIndex || index - _firstIndex >= (ulong)_count)
        {
            return null;
        }

        var entry = _entries[(int)(index - _firstIndex)];
        return entry.Term == term ? entry : null;
    }

    public void Remember(Google.Protobuf.Collections.RepeatedField<Wire.Entry> entries)
    {
        if (_entries.Length < entries.Count)
        {
            _entries = new Wire.Entry[Math.Max(entries.Count, 2 * _entries.Length)];
        }

        entries.CopyTo(_entries, 0);
        // The tail of an earlier, longer message stays behind unused: cleared, so its payloads can be collected.
        Array.Clear(_entries, entries.Count, _count > entries.Count ? _count - entries.Count : 0);
        _count = entries.Count;
        _firstIndex = entries[0].Index;
    }
}
