using Dcache.Ctl;
using Dcache.Node.Tests.Cache;
using Dcache.Protocol.Backup;

namespace Dcache.Node.Tests.Ctl;

/// <summary>
/// `snapshot save` keeps a file only when the cache state in it is whole: a node that ended the state early sends a
/// trailer whose size and CRC match what it sent, so only the state's own SHA-256 tells.
/// </summary>
public sealed class SnapshotFileWriterTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("dcache-snapfile-").FullName;

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4096)]
    public void A_whole_state_is_kept_in_parts_of_any_size(int partBytes)
    {
        var state = State();
        var file = Path.Combine(_directory, $"whole-{partBytes}.dcsnap");
        using (var writer = new SnapshotFileWriter(file))
        {
            writer.WriteHeader(new SnapshotHeader { ClusterId = "c", Index = 1 });
            for (var offset = 0; offset < state.Length; offset += partBytes)
            {
                writer.WriteData(state.AsSpan(offset, Math.Min(partBytes, state.Length - offset)));
            }

            writer.Finish();
        }

        Assert.True(File.Exists(file));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(32)]
    [InlineData(1000)]
    public void A_state_cut_short_is_refused_and_no_file_is_left(int missingBytes)
    {
        var state = State();
        var file = Path.Combine(_directory, $"cut-{missingBytes}.dcsnap");
        using (var writer = new SnapshotFileWriter(file))
        {
            writer.WriteHeader(new SnapshotHeader { ClusterId = "c", Index = 1 });
            writer.WriteData(state.AsSpan(0, state.Length - missingBytes));
            var refusal = Assert.Throws<SnapshotFileException>(writer.Finish);
            Assert.Contains("SHA-256", refusal.Message, StringComparison.Ordinal);
        }

        Assert.Empty(Directory.GetFiles(_directory));
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static byte[] State()
    {
        var cache = new CacheHarness();
        for (var i = 0; i < 300; i++)
        {
            cache.Set("key-" + i, "value-" + i);
        }

        using var stream = new MemoryStream();
        cache.Machine.WriteSnapshot(stream);
        return stream.ToArray();
    }
}
