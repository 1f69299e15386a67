using Dcache.Raft;
using Dcache.TestSupport.Linearizability;

namespace Dcache.TestSupport.Simulation;

// The simulated clients: each issues one operation at a time and records what it saw in the history.
public sealed partial class ClusterSimulator
{
    private readonly List<SimClient> _clients = [];
    private readonly List<HistoryRecord> _history = [];
    private IReadOnlyList<Operation> _finalHistory = [];
    private ulong _nextReadContext;
    private long _nextToken;

    private enum ClientState : byte
    {
        /// <summary>Between operations.</summary>
        Idle,
        /// <summary>Has an operation it has not yet got a node to accept (nothing recorded yet).</summary>
        Trying,
        WaitingPut,
        WaitingGet,
    }

    private void StartClients()
    {
        for (var i = 0; i < _options.Clients; i++)
        {
            var client = new SimClient(i);
            _clients.Add(client);
            WakeClient(client, _random.NextInt64(20 * MicrosPerMs));
        }
    }

    private void WakeClient(SimClient client, long delay)
    {
        client.Token = ++_nextToken;
        Schedule(_now + delay, new SimEvent(EventKind.ClientWake) { Client = client.Id, Token = client.Token });
    }

    private void OnClientWake(SimEvent e)
    {
        var client = _clients[e.Client];
        if (client.Token != e.Token)
        {
            return;
        }

        if (_phase != Phase.Chaos)
        {
            // No new operations once the faults stop; an operation never called leaves no trace.
            client.State = ClientState.Idle;
            return;
        }

        if (client.State == ClientState.Idle)
        {
            client.Key = "k" + _random.Next(_options.Keys);
            if (_random.NextDouble() < _options.ReadFraction)
            {
                client.Kind = OperationKind.Get;
                client.Value = null;
                client.Command = null;
            }
            else
            {
                client.Kind = OperationKind.Put;
                client.Value = $"c{client.Id}.{client.NextSequence++}";
                client.Command = new KvCommand(client.Key, client.Value).Encode();
            }

            client.State = ClientState.Trying;
        }

        if (client.State == ClientState.Trying)
        {
            Attempt(client);
        }
    }

    private void Attempt(SimClient client)
    {
        var target = client.Kind == OperationKind.Put && NodeById(client.LeaderGuess) is { IsRunning: true } guess
            ? guess
            : PickMember();
        if (target is null)
        {
            WakeClient(client, 10 * MicrosPerMs);
            return;
        }

        var raft = target.Raft!;
        client.Node = target.Id;
        client.CallTime = _now;
        client.Token = ++_nextToken;
        if (client.Kind == OperationKind.Put)
        {
            var result = raft.Propose(client.Command);
            _trace.Add(_now, "propose", target.Id, $"c{client.Id} {client.Key}={client.Value} -> {result.Status} {result.Index}/{result.Term} hint={result.LeaderHint}");
            switch (result.Status)
            {
                case ProposeStatus.Accepted:
                    client.State = ClientState.WaitingPut;
                    client.Index = result.Index;
                    client.Term = result.Term;
                    client.LeaderGuess = target.Id;
                    target.Proposals[result.Index] = new PendingProposal(client.Id, client.Token);
                    Schedule(_now + _options.ClientTimeoutMs * MicrosPerMs, new SimEvent(EventKind.ClientTimeout) { Client = client.Id, Token = client.Token });
                    break;
                case ProposeStatus.NotLeader:
                    // A definite failure: nothing was appended. Retry at the hinted leader (or anywhere).
                    client.LeaderGuess = result.LeaderHint;
                    WakeClient(client, (result.LeaderHint != 0 ? 1 : 5 + _random.Next(10)) * MicrosPerMs);
                    break;
                default:
                    WakeClient(client, (5 + _random.Next(15)) * MicrosPerMs);
                    break;
            }
        }
        else
        {
            client.State = ClientState.WaitingGet;
            client.ReadContext = ++_nextReadContext;
            target.Reads.Add(new PendingRead(client.ReadContext, client.Id, client.Token, client.Key));
            raft.ReadIndex(client.ReadContext);
            _trace.Add(_now, "read index", target.Id, $"c{client.Id} {client.Key} ctx{client.ReadContext}");
            Schedule(_now + _options.ClientTimeoutMs * MicrosPerMs, new SimEvent(EventKind.ClientTimeout) { Client = client.Id, Token = client.Token });
        }

        Touch(target);
    }

    /// <summary>A running node of the latest known membership, at random (a client's "any server").</summary>
    private SimNode? PickMember()
    {
        var candidates = new List<SimNode>();
        foreach (var id in _latestMembership.All)
        {
            if (NodeById(id) is { IsRunning: true } node)
            {
                candidates.Add(node);
            }
        }

        return candidates.Count == 0 ? null : candidates[_random.Next(candidates.Count)];
    }

    private void OnClientTimeout(SimEvent e)
    {
        var client = _clients[e.Client];
        if (client.Token != e.Token)
        {
            return;
        }

        var node = NodeById(client.Node);
        _trace.Add(_now, "client timeout", client.Node, $"c{client.Id} {client.Kind} {client.Key}");
        if (client.State == ClientState.WaitingPut)
        {
            // The node it believed led did not deliver: try elsewhere next time.
            client.LeaderGuess = 0;
            node?.Proposals.Remove(client.Index);
            RecordUnknownPut(client);
        }
        else if (client.State == ClientState.WaitingGet)
        {
            // A read that never returned had no effect: it is left out of the history.
            node?.Reads.RemoveAll(r => r.Context == client.ReadContext);
            client.State = ClientState.Idle;
            WakeClient(client, ThinkTime());
        }
    }

    private void ProposalApplied(PendingProposal proposal, Entry entry)
    {
        var client = _clients[proposal.Client];
        if (client.Token != proposal.Token || client.State != ClientState.WaitingPut)
        {
            return;
        }

        if (entry.Term != client.Term)
        {
            // Another entry took the index: the write definitely failed. Try it again.
            _trace.Add(_now, "proposal superseded", client.Node, $"c{client.Id} {client.Index}/{client.Term} by {entry}");
            client.State = ClientState.Trying;
            WakeClient(client, MicrosPerMs);
            return;
        }

        if (!entry.Data.Span.SequenceEqual(client.Command))
        {
            throw new SimulationViolation(FailureKind.Invariant,
                $"c{client.Id}'s proposal accepted at {client.Index}/{client.Term} was applied at that index and term with another payload");
        }

        _history.Add(new HistoryRecord(client.Id, OperationKind.Put, client.Key, client.Value, null, client.CallTime, _now, client.Index, client.Term, client.Command));
        _stats.WritesCommitted++;
        client.State = ClientState.Idle;
        WakeClient(client, ThinkTime());
    }

    private void ProposalOutcomeUnknown(PendingProposal proposal)
    {
        var client = _clients[proposal.Client];
        if (client.Token == proposal.Token && client.State == ClientState.WaitingPut)
        {
            RecordUnknownPut(client);
        }
    }

    private void RecordUnknownPut(SimClient client)
    {
        _history.Add(new HistoryRecord(client.Id, OperationKind.Put, client.Key, client.Value, null, client.CallTime, null, client.Index, client.Term, client.Command));
        _stats.WritesUnknown++;
        client.State = ClientState.Idle;
        WakeClient(client, ThinkTime());
    }

    private void ServeReads(SimNode node)
    {
        for (var i = 0; i < node.Reads.Count; i++)
        {
            var read = node.Reads[i];
            if (read.Index is not { } index || node.Applied < index)
            {
                continue;
            }

            node.Reads.RemoveAt(i--);
            var client = _clients[read.Client];
            if (client.Token != read.Token || client.State != ClientState.WaitingGet)
            {
                continue;
            }

            var value = node.Kv.Get(read.Key);
            _trace.Add(_now, "read served", node.Id, $"c{client.Id} {read.Key}={value ?? "nil"} at read index {index} applied {node.Applied}");
            _history.Add(new HistoryRecord(client.Id, OperationKind.Get, read.Key, null, value, client.CallTime, _now, 0, 0, null));
            _stats.ReadsServed++;
            client.State = ClientState.Idle;
            WakeClient(client, ThinkTime());
        }
    }

    private void ReadFailed(PendingRead read)
    {
        var client = _clients[read.Client];
        if (client.Token == read.Token && client.State == ClientState.WaitingGet)
        {
            // A definite failure: not recorded; try the read again elsewhere.
            client.State = ClientState.Trying;
            WakeClient(client, (1 + _random.Next(5)) * MicrosPerMs);
        }
    }

    private long ThinkTime() => _random.NextInt64(_options.MaxClientThinkMs * MicrosPerMs + 1);

    /// <summary>The history handed to the checker: unknown writes settled from the log where the log tells (see the option).</summary>
    private List<Operation> BuildHistory(ulong finalCommit)
    {
        var operations = new List<Operation>(_history.Count);
        foreach (var record in _history)
        {
            var returnTime = record.ReturnTime;
            if (record.Kind == OperationKind.Put && returnTime is null && _options.ResolveUnknownWritesFromLog)
            {
                // The index and term alone do not name the write: a leader that crashed before its term was durable may
                // lead that term again after restarting (a lone voter re-elects itself) and put another entry at the
                // index it had promised this one (seed 988221 of sweep-membership). The payload must match too.
                var committed = _invariants.Committed(record.Index);
                var sameEntry = committed is { TermKnown: true, DataKnown: true } && committed.Term == record.Term
                    && committed.Data.Span.SequenceEqual(record.Command);
                var otherEntry = committed is { TermKnown: true }
                    && (committed.Term != record.Term || (committed.DataKnown && !committed.Data.Span.SequenceEqual(record.Command)));
                if (sameEntry)
                {
                    returnTime = Math.Max(record.CallTime, committed!.FirstSeenMicros);
                    _stats.WritesResolvedFromLog++;
                }
                else if (otherEntry || record.Index > finalCommit)
                {
                    // Another entry was committed at its index, or the settled log ends before it: it never happened.
                    _stats.WritesResolvedFromLog++;
                    continue;
                }
            }

            operations.Add(new Operation(record.Client, record.Kind, record.Key, record.Input, record.Output, record.CallTime, returnTime));
        }

        return operations;
    }

    private sealed class SimClient(int id)
    {
        public int Id { get; } = id;
        public ClientState State { get; set; }
        public ulong LeaderGuess { get; set; }
        public int NextSequence { get; set; }

        /// <summary>Identifies the client's current wait: wake-ups, timeouts and completions for older ones are ignored.</summary>
        public long Token { get; set; }

        public OperationKind Kind { get; set; }
        public string Key { get; set; } = "";
        public string? Value { get; set; }
        public byte[]? Command { get; set; }
        public long CallTime { get; set; }
        public ulong Node { get; set; }
        public ulong Index { get; set; }
        public ulong Term { get; set; }
        public ulong ReadContext { get; set; }
    }

    private readonly record struct HistoryRecord(
        int Client,
        OperationKind Kind,
        string Key,
        string? Input,
        string? Output,
        long CallTime,
        long? ReturnTime,
        ulong Index,
        ulong Term,
        byte[]? Command);
}
