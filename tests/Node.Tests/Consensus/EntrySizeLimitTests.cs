using System.Buffers;
using Dcache.Cache;
using Dcache.Node.Consensus;
using Dcache.Node.Hosting;
using Dcache.Node.Services;
using Dcache.Node.Transport;
using Dcache.Raft;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Proto = Dcache.Protocol.Cache;

namespace Dcache.Node.Tests.Consensus;

/// <summary>
/// A write's log entry may take exactly <see cref="RaftDriverSettings.MaxEntryBytes"/> and no byte more. Where the Raft
/// log's page is the bound, one byte over stops every node as it saves the entry; so the limit is checked to the byte.
/// </summary>
public sealed class EntrySizeLimitTests
{
    private const int Limit = 4_096;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_write_whose_entry_takes_the_limit_applies_and_one_a_byte_larger_is_refused()
    {
        var metrics = new NodeMetrics();
        var settings = new RaftDriverSettings(1, new RaftOptions { Id = 1 }, TimeSpan.FromMilliseconds(10), 1_000_000, 1_000_000, TimeSpan.FromHours(1), TimeSpan.FromMinutes(1)) { MaxEntryBytes = Limit };
        var driver = new RaftDriver(settings, MemoryStorage.Bootstrap(Membership.Of([1UL])), new NoSnapshots(), new CacheStateMachine(), new AddressBook(new Dictionary<ulong, string>()), (_, _) => { }, TimeProvider.System, metrics, NullLogger<RaftDriver>.Instance);
        var transport = new PeerTransport(1, "http://127.0.0.1:1", new ClusterCredentials("test", "secret"), 1 << 20, CacheCommand.FormatVersion, driver.Clocks, driver, NullLogger<PeerTransport>.Instance);
        driver.Start(transport);
        try
        {
            var atLimit = await driver.ExecuteAsync(SetOfEntrySize(Limit)).WaitAsync(Patience);
            Assert.True(atLimit.ResultCase == Proto.Reply.ResultOneofCase.Ok, $"reply: {atLimit}");

            var over = await driver.ExecuteAsync(SetOfEntrySize(Limit + 1)).WaitAsync(Patience);
            Assert.StartsWith($"ERR command too large: its log entry would be {Limit + 1} bytes, over the cluster's limit of {Limit}", over.Error, StringComparison.Ordinal);
        }
        finally
        {
            await driver.DisposeAsync();
            await transport.DisposeAsync();
            metrics.Dispose();
        }
    }

    /// <summary>A SET whose entry, encoded as the leader encodes it, takes <paramref name="bytes"/> bytes.</summary>
    private static Proto.Command SetOfEntrySize(int bytes)
    {
        Proto.Command Set(int valueBytes) => new()
        {
            Id = 1,
            Set = new Proto.SetRequest { Key = ByteString.CopyFromUtf8("k"), Value = ByteString.CopyFrom(new byte[valueBytes]) },
        };

        int Size(int valueBytes)
        {
            var buffer = new ArrayBufferWriter<byte>();
            WriteEncoder.Encode(Set(valueBytes), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), buffer);
            return buffer.WrittenCount;
        }

        for (var value = Math.Max(0, bytes - Size(0) - 8); value <= bytes; value++)
        {
            if (Size(value) == bytes)
            {
                return Set(value);
            }
        }

        throw new InvalidOperationException($"no SET encodes to exactly {bytes} bytes");
    }
}
