using System.IO.Pipelines;
using Dcache.Node.Services;

namespace Dcache.Node.Tests.Services;

/// <summary>The backup's state serialised into a pipe: a failure part-way must reach the reader as a failure.</summary>
public sealed class BackupSerialiseTests
{
    [Fact]
    public async Task A_serialiser_failing_part_way_fails_the_reader_instead_of_ending_the_state_early()
    {
        var pipe = new Pipe();
        var serialise = BackupService.SerialiseAsync(pipe.Writer, output =>
        {
            output.Write(new byte[1000]);
            throw new InsufficientMemoryException("out of memory part-way");
        });

        long received = 0;
        var failure = await Record.ExceptionAsync(async () =>
        {
            while (true)
            {
                var read = await pipe.Reader.ReadAsync();
                received += read.Buffer.Length;
                pipe.Reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    return;
                }
            }
        });
        await serialise;

        // The pipe may hand over the bytes written before the failure, or the failure at once: never an end.
        Assert.IsType<InsufficientMemoryException>(failure);
        Assert.True(received <= 1000, $"{received} bytes");
    }

    [Fact]
    public async Task A_whole_state_ends_the_pipe_normally()
    {
        var pipe = new Pipe();
        var serialise = BackupService.SerialiseAsync(pipe.Writer, output => output.Write(new byte[3000]));
        var read = await pipe.Reader.ReadAtLeastAsync(3001);
        await serialise;
        Assert.True(read.IsCompleted);
        Assert.Equal(3000, read.Buffer.Length);
    }
}
