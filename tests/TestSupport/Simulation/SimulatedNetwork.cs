namespace Dcache.TestSupport.Simulation;

/// <summary>
/// The network between simulated nodes: every message gets an independent random delay (so messages reorder),
/// may be lost or duplicated, and directed links can be cut (a symmetric partition cuts both directions).
/// All randomness comes from the run's generator; times are virtual microseconds.
/// </summary>
public sealed class SimulatedNetwork
{
    private readonly Random _random;
    // Directed cut links (from, to). Sorted so that describing the partition is deterministic too.
    private readonly SortedSet<(ulong From, ulong To)> _cuts = [];

    public SimulatedNetwork(Random random, long minDelayMicros, long maxDelayMicros)
    {
        if (minDelayMicros < 0 || maxDelayMicros < minDelayMicros)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDelayMicros), "delays must satisfy 0 <= min <= max");
        }

        _random = random;
        MinDelayMicros = minDelayMicros;
        MaxDelayMicros = maxDelayMicros;
    }

    public long MinDelayMicros { get; }

    public long MaxDelayMicros { get; }

    /// <summary>Probability that a message is lost.</summary>
    public double LossRate { get; set; }

    /// <summary>Probability that a message that is not lost is delivered twice (with independent delays).</summary>
    public double DuplicateRate { get; set; }

    public int CutLinkCount => _cuts.Count;

    public bool IsCut(ulong from, ulong to) => _cuts.Contains((from, to));

    public void Cut(ulong from, ulong to)
    {
        if (from != to)
        {
            _cuts.Add((from, to));
        }
    }

    public void CutBothWays(ulong a, ulong b)
    {
        Cut(a, b);
        Cut(b, a);
    }

    /// <summary>Cuts every link between the two groups, in both directions.</summary>
    public void Partition(IEnumerable<ulong> side, IEnumerable<ulong> otherSide)
    {
        var others = otherSide.ToList();
        foreach (var a in side)
        {
            foreach (var b in others)
            {
                CutBothWays(a, b);
            }
        }
    }

    public void HealAll() => _cuts.Clear();

    /// <summary>
    /// Decides the fate of one message sent now from <paramref name="from"/> to <paramref name="to"/>: the delays after
    /// which copies arrive (none when lost or the link is cut, two when duplicated).
    /// </summary>
    public int Plan(ulong from, ulong to, Span<long> delays)
    {
        if (delays.Length < 2)
        {
            throw new ArgumentException("room for two deliveries is needed", nameof(delays));
        }

        if (IsCut(from, to))
        {
            return 0;
        }

        // Draw in a fixed order whatever the outcome, so one message's fate does not shift the draws of the next.
        var lost = _random.NextDouble() < LossRate;
        var duplicated = _random.NextDouble() < DuplicateRate;
        var first = NextDelay();
        var second = NextDelay();
        if (lost)
        {
            return 0;
        }

        delays[0] = first;
        if (!duplicated)
        {
            return 1;
        }

        delays[1] = second;
        return 2;
    }

    public string Describe() =>
        _cuts.Count == 0 ? "connected" : "cut " + string.Join(" ", _cuts.Select(c => $"{c.From}->{c.To}"));

    private long NextDelay() => MinDelayMicros + _random.NextInt64(MaxDelayMicros - MinDelayMicros + 1);
}
