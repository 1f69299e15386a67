using System.Globalization;
using Dcache.TestSupport.Linearizability;

namespace Dcache.TestSupport.Tests;

public sealed class LinearizabilityCheckerTests
{
    private const string K = "k";

    [Fact]
    public void Empty_history_is_linearizable()
    {
        var result = LinearizabilityChecker.Check([]);

        Assert.Equal(CheckOutcome.Linearizable, result.Outcome);
        Assert.Empty(result.Keys);
    }

    [Fact]
    public void Sequential_history_is_linearizable()
    {
        Operation[] history =
        [
            Get(1, K, null, 0, 1),
            Put(1, K, "a", 2, 3),
            Get(2, K, "a", 4, 5),
            Put(2, K, "b", 6, 7),
            Get(1, K, "b", 8, 9),
            Delete(1, K, 10, 11),
            Get(2, K, null, 12, 13),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Concurrent_writes_and_reads_are_linearizable_in_the_one_order_that_fits()
    {
        // Put b must go first (read at [20,30]), then Put a (read at [40,50] and after both writes returned).
        Operation[] history =
        [
            Put(1, K, "a", 0, 100),
            Put(2, K, "b", 10, 90),
            Get(3, K, "b", 20, 30),
            Get(3, K, "a", 40, 50),
            Get(3, K, "a", 110, 120),
        ];
        AssertLinearizable(history);

        // Once a was read, b cannot come back: Put b is the only other candidate and it already took effect.
        Operation[] impossible = [.. history[..4], Get(3, K, "b", 110, 120)];
        AssertNotLinearizable(impossible, K);
    }

    [Fact]
    public void Stale_read_after_a_completed_write_is_not_linearizable()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Put(1, K, "b", 20, 30),
            Get(2, K, "a", 40, 50),
        ];

        var result = AssertNotLinearizable(history, K);
        Assert.Contains("it read \"a\" but the value is \"b\"", result.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void Read_concurrent_with_a_write_may_see_either_value()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Put(1, K, "b", 20, 30),
            Get(2, K, "a", 25, 35),
            Get(3, K, "b", 25, 35),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Lost_write_is_not_linearizable()
    {
        // Put b returned, yet later reads keep seeing a, as if the write had been acknowledged and then dropped.
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Get(2, K, "a", 12, 18),
            Put(1, K, "b", 20, 30),
            Get(2, K, "a", 25, 35),
            Get(2, K, "a", 40, 50),
            Get(3, K, "a", 60, 70),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Read_of_a_value_never_written_is_not_linearizable()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Get(2, K, "zzz", 5, 15),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Pending_write_whose_value_is_read_later_is_linearizable()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Put(2, K, "b", 20, null),
            Get(3, K, "a", 30, 40),
            Get(3, K, "b", 1000, 1010),
            Get(1, K, "b", 2000, 2010),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Pending_write_never_observed_is_linearizable()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Put(2, K, "lost", 20, null),
            Get(3, K, "a", 30, 40),
            Get(3, K, "a", 1000, 1010),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Pending_write_may_not_be_read_before_its_call()
    {
        Operation[] history =
        [
            Get(3, K, "b", 0, 10),
            Put(2, K, "b", 20, null),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Reads_that_see_a_pending_write_and_then_the_old_value_again_are_not_linearizable()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Put(2, K, "b", 20, null),
            Get(3, K, "b", 30, 40),
            Get(3, K, "a", 50, 60),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Pending_read_is_ignored()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Get(2, K, "garbage", 20, null),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Calls_and_returns_at_the_same_instant_count_as_concurrent()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Get(2, K, null, 10, 20),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Delete_removes_the_value()
    {
        Operation[] history =
        [
            Put(1, K, "a", 0, 10),
            Delete(2, K, 20, 30),
            Get(1, K, null, 40, 50),
            Put(2, K, "b", 60, 70),
            Get(1, K, "b", 80, 90),
        ];
        AssertLinearizable(history);

        Operation[] resurrected =
        [
            Put(1, K, "a", 0, 10),
            Delete(2, K, 20, 30),
            Get(1, K, "a", 40, 50),
        ];
        AssertNotLinearizable(resurrected, K);
    }

    [Fact]
    public void Increments_count_from_zero_and_build_on_puts_and_each_other()
    {
        Operation[] history =
        [
            Increment(1, K, 1, "1", 0, 10),
            Increment(2, K, 5, "6", 20, 30),
            Get(1, K, "6", 40, 50),
            Put(1, K, "100", 60, 70),
            Increment(2, K, -1, "99", 80, 90),
            Delete(1, K, 100, 110),
            Increment(2, K, 2, "2", 120, 130),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Concurrent_increments_are_linearizable_in_either_order()
    {
        Operation[] history =
        [
            Increment(1, K, 1, "2", 0, 10),
            Increment(2, K, 1, "1", 0, 10),
            Get(3, K, "2", 20, 30),
        ];

        AssertLinearizable(history);
    }

    [Fact]
    public void Increment_applied_twice_is_not_linearizable()
    {
        Operation[] history =
        [
            Increment(1, K, 1, "1", 0, 10),
            Get(2, K, "2", 20, 30),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Two_increments_that_both_saw_zero_are_not_linearizable()
    {
        Operation[] history =
        [
            Increment(1, K, 1, "1", 0, 10),
            Increment(2, K, 1, "1", 0, 10),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Pending_increment_without_output_may_take_effect_or_not()
    {
        Operation[] tookEffect =
        [
            Increment(1, K, 1, "1", 0, 10),
            Increment(2, K, 10, null, 20, null),
            Get(3, K, "11", 30, 40),
            Increment(3, K, 1, "12", 50, 60),
        ];
        AssertLinearizable(tookEffect);

        Operation[] didNot =
        [
            Increment(1, K, 1, "1", 0, 10),
            Increment(2, K, 10, null, 20, null),
            Get(3, K, "1", 30, 40),
            Increment(3, K, 1, "2", 50, 60),
        ];
        AssertLinearizable(didNot);

        Operation[] twice =
        [
            Increment(1, K, 1, "1", 0, 10),
            Increment(2, K, 10, null, 20, null),
            Get(3, K, "21", 30, 40),
        ];
        AssertNotLinearizable(twice, K);
    }

    [Fact]
    public void Increment_of_a_non_number_is_not_possible()
    {
        Operation[] history =
        [
            Put(1, K, "text", 0, 10),
            Increment(2, K, 1, "1", 20, 30),
        ];

        AssertNotLinearizable(history, K);
    }

    [Fact]
    public void Only_the_violating_key_is_reported()
    {
        Operation[] history =
        [
            Put(1, "good", "a", 0, 10),
            Put(2, "bad", "x", 0, 10),
            Get(3, "good", "a", 20, 30),
            Put(1, "bad", "y", 20, 30),
            Get(3, "bad", "x", 40, 50),
            Increment(2, "counter", 3, "3", 40, 50),
        ];

        var result = LinearizabilityChecker.Check(history);

        Assert.Equal(CheckOutcome.NotLinearizable, result.Outcome);
        Assert.Equal(["bad", "counter", "good"], result.Keys.Select(k => k.Key));
        var bad = Assert.Single(result.Keys, k => k.Outcome != CheckOutcome.Linearizable);
        Assert.Equal("bad", bad.Key);
        Assert.Equal(CheckOutcome.NotLinearizable, bad.Outcome);
        Assert.Equal(3, bad.Operations);
        Assert.All(result.Keys.Where(k => k.Key != "bad"), k => Assert.Null(k.Explanation));

        var report = result.Describe();
        Assert.Contains("Key \"bad\" is NOT linearizable", report, StringComparison.Ordinal);
        Assert.DoesNotContain("Key \"good\"", report, StringComparison.Ordinal);
        Assert.Contains("Longest linearizable prefix found: 2 operations", report, StringComparison.Ordinal);
        Assert.Contains("c3 Get bad in=- out=x [40, 50]", report, StringComparison.Ordinal);
        Assert.Equal(report, result.ToString());
    }

    [Fact]
    public void Explanation_lists_the_sub_history_by_call_time_and_the_longest_prefix()
    {
        Operation[] history =
        [
            Get(2, K, "a", 40, 50),
            Put(1, K, "b", 20, 30),
            Put(1, K, "a", 0, 10),
        ];

        var explanation = AssertNotLinearizable(history, K).Keys[0].Explanation!;

        var lines = explanation.Split('\n');
        var putA = Array.FindIndex(lines, l => l.Contains("in=a", StringComparison.Ordinal));
        var putB = Array.FindIndex(lines, l => l.Contains("in=b", StringComparison.Ordinal));
        var get = Array.FindIndex(lines, l => l.Contains("Get", StringComparison.Ordinal));
        Assert.True(putA < putB && putB < get, explanation);
        Assert.Contains("#0     c1 Put k in=a out=nil [0, 10]", explanation, StringComparison.Ordinal);
        Assert.Contains("prefix step 1", explanation, StringComparison.Ordinal);
        Assert.Contains("Longest linearizable prefix found: 2 operations (2 of the 3 that returned), value after it: \"b\"", explanation, StringComparison.Ordinal);
        Assert.Contains("of the operations left, #2 returns first (at 50)", explanation, StringComparison.Ordinal);
    }

    [Fact]
    public void Overall_outcome_is_the_worst_key_outcome()
    {
        var pathological = Pathological("slow");
        var options = new CheckOptions { MaxStatesPerKey = 100 };

        var unknown = LinearizabilityChecker.Check([.. pathological, Put(1, "fine", "a", 0, 1)], options);
        Assert.Equal(CheckOutcome.Unknown, unknown.Outcome);

        var violated = LinearizabilityChecker.Check([.. pathological, Put(1, "broken", "a", 0, 1), Get(1, "broken", "b", 2, 3)], options);
        Assert.Equal(CheckOutcome.NotLinearizable, violated.Outcome);
        Assert.Equal(["broken", "slow"], violated.Problems.Select(k => k.Key));
    }

    [Fact]
    public void Effort_bound_yields_unknown_instead_of_hanging()
    {
        var result = LinearizabilityChecker.Check(Pathological(K), new CheckOptions { MaxStatesPerKey = 1_000 });

        Assert.Equal(CheckOutcome.Unknown, result.Outcome);
        var key = Assert.Single(result.Keys);
        Assert.Equal(1_000, key.StatesExplored);
        Assert.Contains("MaxStatesPerKey", key.Explanation, StringComparison.Ordinal);
    }

    [Fact]
    public void Time_budget_yields_unknown_instead_of_hanging()
    {
        var options = new CheckOptions { MaxStatesPerKey = long.MaxValue, TimeBudgetPerKey = TimeSpan.FromMilliseconds(50) };

        var result = LinearizabilityChecker.Check(Pathological(K), options);

        Assert.Equal(CheckOutcome.Unknown, result.Outcome);
        Assert.Contains("TimeBudgetPerKey", result.Describe(), StringComparison.Ordinal);
    }

    [Fact]
    public void Malformed_operations_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => LinearizabilityChecker.Check([Put(1, K, "a", 10, 5)]));
        Assert.Throws<ArgumentException>(() => LinearizabilityChecker.Check([new Operation(1, OperationKind.Put, K, null, null, 0, 1)]));
        Assert.Throws<ArgumentException>(() => LinearizabilityChecker.Check([new Operation(1, OperationKind.Increment, K, "one", "1", 0, 1)]));
        Assert.Throws<ArgumentOutOfRangeException>(() => LinearizabilityChecker.Check([], new CheckOptions { MaxStatesPerKey = 0 }));
    }

    [Fact]
    public void Random_linearizable_histories_are_accepted_and_a_corrupted_read_is_caught()
    {
        for (var seed = 0; seed < 200; seed++)
        {
            var rng = new Random(seed);
            var history = GenerateLinearizable(rng, keys: 3, operations: 150, maxSkew: 40, pendingRate: 0.05);

            var result = LinearizabilityChecker.Check(history);
            Assert.True(result.Outcome == CheckOutcome.Linearizable, $"seed {seed}: {result}");

            var reads = Enumerable.Range(0, history.Count)
                .Where(i => history[i].Kind == OperationKind.Get && history[i].ReturnTime is not null)
                .ToArray();
            var victim = reads[rng.Next(reads.Length)];
            var corrupted = history.ToArray();
            corrupted[victim] = corrupted[victim] with { Output = "never-written" };

            var corruptedResult = LinearizabilityChecker.Check(corrupted);
            Assert.True(corruptedResult.Outcome == CheckOutcome.NotLinearizable, $"seed {seed}, corrupted #{victim}: {corruptedResult}");
            Assert.Equal(corrupted[victim].Key, Assert.Single(corruptedResult.Problems).Key);
        }
    }

    [Fact]
    public void Agrees_with_brute_force_on_small_random_histories()
    {
        var outcomes = new int[2];
        for (var seed = 0; seed < 3_000; seed++)
        {
            var history = GenerateSmallArbitrary(new Random(seed), uniqueWrites: seed % 2 == 1);
            var expected = BruteForceLinearizable(history);

            var result = LinearizabilityChecker.Check(history);

            var expectedOutcome = expected ? CheckOutcome.Linearizable : CheckOutcome.NotLinearizable;
            Assert.True(result.Outcome == expectedOutcome, $"seed {seed}: expected {expectedOutcome}, got {result}\n{string.Join('\n', history)}");
            outcomes[expected ? 0 : 1]++;
        }

        // Both verdicts must be well represented for the comparison to mean anything.
        Assert.True(outcomes.Min() > 300, $"linearizable {outcomes[0]}, not {outcomes[1]}");
    }

    [Fact]
    public void Writes_that_never_returned_stay_cheap()
    {
        const int Seed = 3;
        var history = GenerateLinearizable(new Random(Seed), keys: 1, operations: 3_000, maxSkew: 30, pendingRate: 0.3);

        var result = LinearizabilityChecker.Check(history);

        Assert.True(result.Outcome == CheckOutcome.Linearizable, $"seed {Seed}: {result}");
        Assert.True(result.Keys[0].StatesExplored < 20L * history.Count, result.Keys[0].ToString());
    }

    [Fact]
    public void Partitioning_keeps_a_big_multi_key_history_cheap()
    {
        const int Seed = 7;
        var history = GenerateLinearizable(new Random(Seed), keys: 50, operations: 50_000, maxSkew: 100, pendingRate: 0.01);

        var result = LinearizabilityChecker.Check(history);

        Assert.True(result.Outcome == CheckOutcome.Linearizable, $"seed {Seed}: {result}");
        Assert.Equal(50, result.Keys.Count);
        // Each key's search stays close to linear in its operations; checked as one register it would not.
        Assert.All(result.Keys, k => Assert.True(k.StatesExplored < 20L * k.Operations, k.ToString()));
    }

    [Fact]
    public void Long_single_key_history_from_few_clients_is_checked()
    {
        const int Seed = 11;
        var history = GenerateLinearizable(new Random(Seed), keys: 1, operations: 5_000, maxSkew: 20, pendingRate: 0.02);

        var result = LinearizabilityChecker.Check(history);

        Assert.True(result.Outcome == CheckOutcome.Linearizable, $"seed {Seed}: {result}");
    }

    /// <summary>
    /// Thirty writes that never returned, all concurrent, each read once in some order, then a read of a value
    /// nobody wrote: proving it not linearizable means trying every subset of the writes before every read.
    /// </summary>
    private static List<Operation> Pathological(string key)
    {
        const int Writes = 30;
        var history = new List<Operation>();
        for (var i = 0; i < Writes; i++)
        {
            history.Add(Put(i, key, $"v{i}", i, null));
        }

        for (var i = 0; i < Writes; i++)
        {
            history.Add(Get(100, key, $"v{i * 7 % Writes}", 100 + (10 * i), 105 + (10 * i)));
        }

        history.Add(Get(100, key, "never-written", 1000, 1005));
        return history;
    }

    /// <summary>
    /// Runs random operations against a sequential store and gives each a real-time interval around its
    /// linearization point, so the history is linearizable by construction. Some operations never return; of
    /// those, writes take effect or not at random.
    /// </summary>
    private static List<Operation> GenerateLinearizable(Random rng, int keys, int operations, int maxSkew, double pendingRate)
    {
        var store = new Dictionary<string, string?>();
        var history = new List<Operation>(operations);
        long point = 0;
        for (var i = 0; i < operations; i++)
        {
            point += rng.Next(1, 10);
            var key = $"key{rng.Next(keys)}";
            var current = store.GetValueOrDefault(key);
            var call = point - rng.Next(maxSkew);
            long? ret = point + rng.Next(maxSkew);
            var pending = rng.NextDouble() < pendingRate;
            var takesEffect = !pending || rng.Next(2) == 0;
            var client = rng.Next(5);
            var roll = rng.Next(100);
            var canIncrement = current is null || long.TryParse(current, CultureInfo.InvariantCulture, out _);

            Operation op;
            if (roll < 40)
            {
                op = Get(client, key, current, call, ret);
            }
            else if (roll < 55 && canIncrement)
            {
                var delta = rng.Next(-3, 6);
                var result = (current is null ? 0 : long.Parse(current, CultureInfo.InvariantCulture)) + delta;
                var text = result.ToString(CultureInfo.InvariantCulture);
                op = Increment(client, key, delta, pending ? null : text, call, ret);
                if (takesEffect)
                {
                    store[key] = text;
                }
            }
            else if (roll < 65)
            {
                op = Delete(client, key, call, ret);
                if (takesEffect)
                {
                    store[key] = null;
                }
            }
            else
            {
                var value = $"c{client}-{i}";
                op = Put(client, key, value, call, ret);
                if (takesEffect)
                {
                    store[key] = value;
                }
            }

            history.Add(pending ? op with { ReturnTime = null } : op);
        }

        // The checker must not depend on the order it is given.
        return [.. history.OrderBy(_ => rng.Next())];
    }

    /// <summary>
    /// Up to seven operations on one key with random times and results, some of them pending. With
    /// <paramref name="uniqueWrites"/> every Put writes its own value, as the simulator's do, and reads pick one.
    /// </summary>
    private static List<Operation> GenerateSmallArbitrary(Random rng, bool uniqueWrites)
    {
        string?[] values = [null, "a", "b", "1", "2"];
        var history = new List<Operation>();
        var count = rng.Next(1, 8);
        for (var i = 0; i < count; i++)
        {
            long call = rng.Next(20);
            long? ret = rng.Next(100) < (uniqueWrites ? 30 : 15) ? null : call + rng.Next(10);
            var client = i;
            history.Add(rng.Next(4) switch
            {
                0 when uniqueWrites => Get(client, K, rng.Next(3) == 0 ? null : $"u{rng.Next(count)}", call, ret),
                0 => Get(client, K, values[rng.Next(values.Length)], call, ret),
                1 when uniqueWrites => Put(client, K, $"u{i}", call, ret),
                1 => Put(client, K, values[rng.Next(1, values.Length)]!, call, ret),
                2 => Delete(client, K, call, ret),
                _ => Increment(client, K, rng.Next(-1, 3), ret is null && rng.Next(2) == 0 ? null : values[rng.Next(3, values.Length)], call, ret),
            });
        }

        return history;
    }

    /// <summary>
    /// The definition, checked directly: try every order of the operations that respects real time (an operation
    /// may go next only if no operation still to place returned before it was called), leaving pending ones out
    /// when convenient. Independent of the checker's model and search.
    /// </summary>
    private static bool BruteForceLinearizable(List<Operation> history)
    {
        var ops = history.Where(o => !(o.Kind == OperationKind.Get && o.ReturnTime is null)).ToArray();
        var placed = new bool[ops.Length];
        return Place(null);

        bool Place(string? value)
        {
            if (Enumerable.Range(0, ops.Length).All(i => placed[i] || ops[i].ReturnTime is null))
            {
                return true;
            }

            for (var i = 0; i < ops.Length; i++)
            {
                var candidate = ops[i];
                if (placed[i] || Enumerable.Range(0, ops.Length).Any(j => !placed[j] && ops[j].ReturnTime < candidate.CallTime))
                {
                    continue;
                }

                string? next;
                switch (candidate.Kind)
                {
                    case OperationKind.Get when candidate.Output != value:
                        continue;
                    case OperationKind.Get:
                        next = value;
                        break;
                    case OperationKind.Put:
                        next = candidate.Input;
                        break;
                    case OperationKind.Delete:
                        next = null;
                        break;
                    default:
                        long current = 0;
                        if (value is not null && !long.TryParse(value, CultureInfo.InvariantCulture, out current))
                        {
                            continue;
                        }

                        next = (current + long.Parse(candidate.Input!, CultureInfo.InvariantCulture)).ToString(CultureInfo.InvariantCulture);
                        if (candidate.Output is not null && candidate.Output != next)
                        {
                            continue;
                        }

                        break;
                }

                placed[i] = true;
                var found = Place(next);
                placed[i] = false;
                if (found)
                {
                    return true;
                }
            }

            return false;
        }
    }

    private static CheckResult AssertLinearizable(IReadOnlyList<Operation> history)
    {
        var result = LinearizabilityChecker.Check(history);
        Assert.True(result.Outcome == CheckOutcome.Linearizable, result.ToString());
        return result;
    }

    private static CheckResult AssertNotLinearizable(IReadOnlyList<Operation> history, string key)
    {
        var result = LinearizabilityChecker.Check(history);
        Assert.True(result.Outcome == CheckOutcome.NotLinearizable, result.ToString());
        var bad = Assert.Single(result.Keys, k => k.Outcome == CheckOutcome.NotLinearizable);
        Assert.Equal(key, bad.Key);
        Assert.NotNull(bad.Explanation);
        return result;
    }

    private static Operation Get(int client, string key, string? output, long call, long? ret) =>
        new(client, OperationKind.Get, key, null, output, call, ret);

    private static Operation Put(int client, string key, string value, long call, long? ret) =>
        new(client, OperationKind.Put, key, value, null, call, ret);

    private static Operation Delete(int client, string key, long call, long? ret) =>
        new(client, OperationKind.Delete, key, null, null, call, ret);

    private static Operation Increment(int client, string key, long delta, string? output, long call, long? ret) =>
        new(client, OperationKind.Increment, key, delta.ToString(CultureInfo.InvariantCulture), output, call, ret);
}
