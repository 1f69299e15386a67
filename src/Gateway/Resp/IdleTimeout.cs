namespace Dcache.Gateway.Resp;

/// <summary>
/// Redis's client timeout for one connection: a token that is cancelled once the connection has waited
/// <see cref="RespOptions.IdleTimeoutSeconds"/> for its next request. One timer per connection, re-armed per wait.
/// </summary>
internal sealed class IdleTimeout(TimeSpan timeout, TimeProvider time) : IDisposable
{
    private CancellationTokenSource _source = new(Timeout.InfiniteTimeSpan, time);

    /// <summary>The wait for the next request begins.</summary>
    public CancellationToken Start()
    {
        if (_source.IsCancellationRequested)
        {
            // It fired just as a request arrived: that wait was not idle after all, and a cancelled source stays so.
            _source.Dispose();
            _source = new CancellationTokenSource(Timeout.InfiniteTimeSpan, time);
        }

        _source.CancelAfter(timeout);
        return _source.Token;
    }

    /// <summary>A request arrived: the connection is busy until the next <see cref="Start"/>.</summary>
    public void Stop() => _source.CancelAfter(Timeout.InfiniteTimeSpan);

    /// <summary>True when the wait begun by the last <see cref="Start"/> ran out.</summary>
    public bool Expired => _source.IsCancellationRequested;

    public void Dispose() => _source.Dispose();
}
