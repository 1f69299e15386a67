using System.Globalization;
using System.Text;

namespace Dcache.TestSupport.Simulation;

/// <summary>
/// The last events of a run, kept cheaply (a ring of records whose text is built only when a failure is reported),
/// and optionally every event written out as it happens.
/// </summary>
internal sealed class SimulationTrace
{
    private readonly TraceRecord[] _ring;
    private readonly TextWriter? _full;
    private long _count;

    public SimulationTrace(int length, TextWriter? full)
    {
        _ring = new TraceRecord[Math.Max(1, length)];
        _full = full;
    }

    public bool IsFull => _full is not null;

    /// <summary>Records an event; <paramref name="detail"/> is formatted lazily (a Message, a string, ...).</summary>
    public void Add(long timeMicros, string what, ulong node, object? detail = null)
    {
        var record = new TraceRecord(timeMicros, what, node, detail);
        _ring[_count % _ring.Length] = record;
        _count++;
        _full?.WriteLine(record.ToString());
    }

    public string Dump()
    {
        var text = new StringBuilder();
        var first = Math.Max(0, _count - _ring.Length);
        for (var i = first; i < _count; i++)
        {
            text.AppendLine(_ring[i % _ring.Length].ToString());
        }

        return text.ToString();
    }

    private readonly record struct TraceRecord(long TimeMicros, string What, ulong Node, object? Detail)
    {
        public override string ToString() =>
            string.Create(CultureInfo.InvariantCulture, $"{TimeMicros / 1000.0,10:0.000}ms n{Node} {What}{(Detail is null ? "" : " " + Detail)}");
    }
}
