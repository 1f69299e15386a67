using Dcache.TestSupport.Simulation;

namespace Dcache.Raft.Tests.Simulation;

/// <summary>The simulator's own pieces, tested without the core: network model, event order, state machine, disk.</summary>
public sealed class SimulatorPartsTests
{
    [Fact]
    public void NetworkDeliversOnceWithinTheDelayRangeWhenNothingGoesWrong()
    {
        var network = new SimulatedNetwork(new Random(1), 1000, 20_000);
        Span<long> delays = stackalloc long[2];
        for (var i = 0; i < 1000; i++)
        {
            Assert.Equal(1, network.Plan(1, 2, delays));
            Assert.InRange(delays[0], 1000, 20_000);
        }
    }

    [Fact]
    public void NetworkDelaysAreIndependentSoMessagesReorder()
    {
        var network = new SimulatedNetwork(new Random(2), 1000, 20_000);
        Span<long> delays = stackalloc long[2];
        var arrivals = new List<long>();
        for (var sent = 0L; sent < 100; sent++)
        {
            network.Plan(1, 2, delays);
            arrivals.Add(sent * 100 + delays[0]);
        }

        Assert.NotEqual(arrivals.Order(), arrivals);
    }

    [Fact]
    public void NetworkLosesAndDuplicatesAtTheConfiguredRates()
    {
        var network = new SimulatedNetwork(new Random(3), 0, 10) { LossRate = 0.2, DuplicateRate = 0.3 };
        Span<long> delays = stackalloc long[2];
        var counts = new int[3];
        for (var i = 0; i < 10_000; i++)
        {
            counts[network.Plan(1, 2, delays)]++;
        }

        Assert.InRange(counts[0], 1800, 2200); // lost
        Assert.InRange(counts[2], 0.3 * 8000 - 200, 0.3 * 8000 + 200); // duplicated, among the delivered
    }

    [Fact]
    public void CutLinksAreDirectedAndPartitionsSymmetricUntilHealed()
    {
        var network = new SimulatedNetwork(new Random(4), 0, 10);
        Span<long> delays = stackalloc long[2];
        network.Cut(1, 2);
        Assert.Equal(0, network.Plan(1, 2, delays));
        Assert.Equal(1, network.Plan(2, 1, delays));

        network.Partition([1], [2, 3]);
        Assert.True(network.IsCut(3, 1) && network.IsCut(1, 3) && network.IsCut(2, 1));
        Assert.False(network.IsCut(2, 3));

        network.HealAll();
        Assert.Equal(0, network.CutLinkCount);
        Assert.Equal(1, network.Plan(1, 2, delays));
    }

    [Fact]
    public void NetworkDecisionsDependOnlyOnTheSeed()
    {
        static List<(int, long)> Draw()
        {
            var network = new SimulatedNetwork(new Random(5), 0, 1000) { LossRate = 0.1, DuplicateRate = 0.1 };
            var result = new List<(int, long)>();
            Span<long> delays = stackalloc long[2];
            for (var i = 0; i < 100; i++)
            {
                var copies = network.Plan(1, 2, delays);
                result.Add((copies, copies > 0 ? delays[0] : -1));
            }

            return result;
        }

        Assert.Equal(Draw(), Draw());
    }

    [Fact]
    public void EventQueueOrdersByTimeThenBySchedulingOrder()
    {
        var queue = new EventQueue<string>();
        queue.Schedule(5, "b");
        queue.Schedule(1, "a");
        queue.Schedule(5, "c");
        queue.Schedule(5, "d");
        var order = new List<string>();
        while (queue.TryDequeue(out var item, out _))
        {
            order.Add(item);
        }

        Assert.Equal(["a", "b", "c", "d"], order);
    }

    [Fact]
    public void KeyValueCommandsAndStateRoundTrip()
    {
        var command = new KvCommand("k1", "c2.7");
        Assert.Equal(command, KvCommand.Decode(command.Encode()));

        var machine = new KvStateMachine();
        machine.ApplyEntryData(command.Encode());
        machine.ApplyEntryData(ReadOnlySpan<byte>.Empty); // a leader's no-op
        machine.Apply(new KvCommand("k0", "x"));
        var copy = KvStateMachine.Deserialize(machine.Serialize());
        Assert.Equal("c2.7", copy.Get("k1"));
        Assert.Equal("x", copy.Get("k0"));
        Assert.Null(copy.Get("k2"));
        Assert.Equal(machine.Serialize(), copy.Serialize());
        Assert.Equal(0, KvStateMachine.Deserialize(ReadOnlyMemory<byte>.Empty).Count);
    }

    [Fact]
    public void MemoryDiskSurvivesCrashesAndKeepsSnapshotDataApart()
    {
        var disk = new MemorySimulatedDisk();
        var storage = disk.Create(1, Membership.Of([1UL, 2, 3]));
        storage.Save(new HardState(2, 1, 0), [new Entry(1, 2, EntryType.Normal, new byte[] { 7 })], null);
        storage.Dispose(); // a crash drops the handle, not the disk

        var reopened = disk.Open(1);
        Assert.Equal(new HardState(2, 1, 0), reopened.InitialState().HardState);
        Assert.Equal(1UL, reopened.LastIndex);

        disk.SaveSnapshotData(1, 5, new byte[] { 1 });
        disk.SaveSnapshotData(1, 9, new byte[] { 2 });
        Assert.Null(disk.LoadSnapshotData(1, 6)); // missing must be null, never an empty snapshot
        disk.DiscardSnapshotDataBelow(1, 9);
        Assert.Null(disk.LoadSnapshotData(1, 5));
        Assert.Equal(new byte[] { 2 }, disk.LoadSnapshotData(1, 9)!.Value.ToArray());

        disk.Wipe(1);
        Assert.Throws<InvalidOperationException>(() => disk.Open(1));
    }
}
