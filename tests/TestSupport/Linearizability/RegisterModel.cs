using System.Globalization;

namespace Dcache.TestSupport.Linearizability;

/// <summary>An operation translated into the model's terms once, so the search loop never touches strings.</summary>
internal readonly record struct ModelOperation(OperationKind Kind, int Value, long Delta, long ExpectedOutput, bool ChecksOutput, bool NeverAccepted);

/// <summary>
/// The sequential specification of one key: a register that is absent or holds a string. States are small
/// integers naming interned values, so the search's memo set stores and compares them as ints, and equal values
/// reached by different routes (a Put of "5", an Increment to 5) are the same state.
/// </summary>
internal sealed class RegisterModel
{
    public const int Absent = 0;
    public const int Rejected = -1;

    private readonly List<Value> _values = [new Value(null, 0, IsNumber: true)];
    private readonly Dictionary<string, int> _idsByText = new(StringComparer.Ordinal);
    private readonly Dictionary<long, int> _idsByNumber = [];

    public bool IsNumber(int state) => _values[state].IsNumber;

    public string? Text(int state) => _values[state].Text;

    public string Describe(int state) => _values[state].Text is { } text ? $"\"{text}\"" : "absent";

    /// <summary>Translates an operation; throws <see cref="ArgumentException"/> for a malformed one.</summary>
    public ModelOperation Compile(Operation op)
    {
        switch (op.Kind)
        {
            case OperationKind.Get:
                return new ModelOperation(op.Kind, Intern(op.Output), 0, 0, ChecksOutput: false, NeverAccepted: false);
            case OperationKind.Put:
                if (op.Input is null)
                {
                    throw new ArgumentException($"Put without an input value: {op}", nameof(op));
                }

                return new ModelOperation(op.Kind, Intern(op.Input), 0, 0, ChecksOutput: false, NeverAccepted: false);
            case OperationKind.Delete:
                return new ModelOperation(op.Kind, Absent, 0, 0, ChecksOutput: false, NeverAccepted: false);
            case OperationKind.Increment:
                if (!TryParseLong(op.Input, out var delta))
                {
                    throw new ArgumentException($"Increment whose input is not a decimal integer: {op}", nameof(op));
                }

                // An output that is not a number is something no correct store could have returned: the
                // operation can never be placed, which the search reports as a violation with context.
                if (op.Output is null)
                {
                    return new ModelOperation(op.Kind, Absent, delta, 0, ChecksOutput: false, NeverAccepted: false);
                }

                var parsed = TryParseLong(op.Output, out var expected);
                return new ModelOperation(op.Kind, Absent, delta, expected, ChecksOutput: true, NeverAccepted: !parsed);
            default:
                throw new ArgumentException($"Unknown operation kind: {op}", nameof(op));
        }
    }

    /// <summary>The state after applying <paramref name="op"/> in <paramref name="state"/>, or <see cref="Rejected"/>.</summary>
    public int Step(int state, in ModelOperation op)
    {
        switch (op.Kind)
        {
            case OperationKind.Get:
                return state == op.Value ? state : Rejected;
            case OperationKind.Put:
                return op.Value;
            case OperationKind.Delete:
                return Absent;
            default:
                if (op.NeverAccepted)
                {
                    return Rejected;
                }

                // A store refuses to increment a non-number or past long's range, so such an increment cannot
                // have taken effect here.
                var current = _values[state];
                if (!current.IsNumber)
                {
                    return Rejected;
                }

                var sum = unchecked(current.Number + op.Delta);
                if (((current.Number ^ sum) & (op.Delta ^ sum)) < 0)
                {
                    return Rejected;
                }

                if (op.ChecksOutput && sum != op.ExpectedOutput)
                {
                    return Rejected;
                }

                return _idsByNumber.TryGetValue(sum, out var id) ? id : Intern(sum.ToString(CultureInfo.InvariantCulture));
        }
    }

    /// <summary>Why <see cref="Step"/> rejects <paramref name="op"/> in <paramref name="state"/>, for explanations.</summary>
    public string WhyRejected(int state, in ModelOperation op)
    {
        if (op.Kind == OperationKind.Get)
        {
            return $"it read {Describe(op.Value)} but the value is {Describe(state)}";
        }

        var current = _values[state];
        if (op.NeverAccepted)
        {
            return "its output is not a number";
        }

        if (!current.IsNumber)
        {
            return $"the value {Describe(state)} is not a number";
        }

        var sum = unchecked(current.Number + op.Delta);
        return ((current.Number ^ sum) & (op.Delta ^ sum)) < 0
            ? "the increment overflows"
            : $"it returned {op.ExpectedOutput.ToString(CultureInfo.InvariantCulture)} but the value would become {sum.ToString(CultureInfo.InvariantCulture)}";
    }

    private int Intern(string? text)
    {
        if (text is null)
        {
            return Absent;
        }

        if (_idsByText.TryGetValue(text, out var id))
        {
            return id;
        }

        id = _values.Count;
        var isNumber = TryParseLong(text, out var number);
        _values.Add(new Value(text, number, isNumber));
        _idsByText.Add(text, id);

        // Only the canonical spelling is reachable by Increment; "007" stays a distinct value from "7".
        if (isNumber && number.ToString(CultureInfo.InvariantCulture) == text)
        {
            _idsByNumber.Add(number, id);
        }

        return id;
    }

    private static bool TryParseLong(string? text, out long value) =>
        long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);

    private readonly record struct Value(string? Text, long Number, bool IsNumber);
}
