using System.Collections.Concurrent;
using System.Diagnostics;
using Dcache.Protocol.Cache;
using Grpc.Core;

namespace Dcache.Integration.Tests.Support;

/// <summary>
/// Concurrent writers of unique keys that follow the leader (by NotLeader hints, else by trying other nodes), and
/// remember exactly which writes were acknowledged and when. Bounded in count and in time.
/// </summary>
internal sealed class WriteLoad : IAsyncDisposable
{
    private readonly LocalCluster _cluster;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task[] _writers;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private ulong _target;
    private long _cursor;

    public WriteLoad(LocalCluster cluster, int writers, int maxWritesPerWriter = 100_000, TimeSpan? maxDuration = null, long? ttlMs = null)
    {
        _cluster = cluster;
        _target = cluster.Nodes.Keys.First();
        _stop.CancelAfter(maxDuration ?? TimeSpan.FromMinutes(2));
        _writers = Enumerable.Range(0, writers).Select(w => Task.Run(() => WriteAsync(w, maxWritesPerWriter, ttlMs))).ToArray();
    }

    /// <summary>key -> value of every acknowledged write.</summary>
    public ConcurrentDictionary<string, string> Acknowledged { get; } = new();

    /// <summary>Elapsed time of every acknowledgement, in order of arrival per writer.</summary>
    public ConcurrentQueue<TimeSpan> AcknowledgedAt { get; } = new();

    public ConcurrentQueue<string> Errors { get; } = new();

    public TimeSpan Elapsed => _clock.Elapsed;

    private async Task WriteAsync(int writer, int maxWrites, long? ttlMs)
    {
        for (var i = 0; i < maxWrites && !_stop.IsCancellationRequested; i++)
        {
            var key = $"w{writer}-{i}";
            var value = $"v{writer}-{i}";
            while (!_stop.IsCancellationRequested)
            {
                var target = Volatile.Read(ref _target);
                try
                {
                    var reply = await _cluster.ExecuteAsync(target, Commands.Set(key, value, ttlMs), TimeSpan.FromSeconds(5));
                    if (reply.ResultCase == Reply.ResultOneofCase.Ok)
                    {
                        Acknowledged[key] = value;
                        AcknowledgedAt.Enqueue(_clock.Elapsed);
                        break;
                    }

                    if (reply.Failure is { Kind: FailureKind.NotLeader, LeaderId: not 0 } failure)
                    {
                        Interlocked.CompareExchange(ref _target, failure.LeaderId, target);
                        continue;
                    }

                    Errors.Enqueue(reply.ToString());
                }
                catch (RpcException ex)
                {
                    Errors.Enqueue(ex.Status.ToString());
                }

                // No leader known, or the node is down: try the next node after a short pause.
                Interlocked.CompareExchange(ref _target, Next(target), target);
                try
                {
                    await Task.Delay(20, _stop.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    /// <summary>
    /// The next node to try after a failure. A cursor shared by all failures moves on each time, rather than "the node
    /// after the one that failed": a removed node that still names the old leader, and that leader, would otherwise
    /// send a writer back and forth between them forever.
    /// </summary>
    private ulong Next(ulong current)
    {
        var ids = _cluster.Nodes.Keys.ToList();
        var next = ids[(int)((ulong)Interlocked.Increment(ref _cursor) % (ulong)ids.Count)];
        return next == current ? ids[(ids.IndexOf(current) + 1) % ids.Count] : next;
    }

    public Task WaitForAcknowledgedAsync(int count, TimeSpan timeout) =>
        Eventually.WaitAsync(() => Acknowledged.Count >= count, timeout, $"{count} acknowledged writes (have {Acknowledged.Count})");

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_writers);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }
}
