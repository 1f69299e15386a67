using System.Globalization;
using System.Runtime.InteropServices;
using Dcache.Cache;
using Dcache.Protocol;
using Dcache.Protocol.Backup;
using Dcache.Raft;
using Dcache.Storage;
using Grpc.Core;
using Grpc.Net.Client;

namespace Dcache.Ctl;

/// <summary>`dcachectl snapshot save|verify|restore`: backups of the cache state, and seeding a new cluster from one.</summary>
internal static class SnapshotCommands
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (args is not [var sub, var file, .. var rest] || file.StartsWith("--", StringComparison.Ordinal))
        {
            Console.Error.WriteLine("dcachectl snapshot: expected 'save FILE', 'verify FILE' or 'restore FILE --data DIR --node-id N --cluster-id ID --initial-cluster 1=URL,...'");
            return 2;
        }

        return await CommandFailures.ReportAsync($"snapshot {sub}", async () =>
        {
            var options = Options.Parse(rest, sub switch
            {
                "save" => Options.Connection,
                "restore" => ["data", "node-id", "cluster-id", "initial-cluster"],
                _ => [],
            });
            return sub switch
            {
                "save" => await SaveAsync(file, options).ConfigureAwait(false),
                "verify" => Verify(file),
                "restore" => Restore(file, options),
                _ => throw new FormatException($"unknown snapshot command '{sub}' (save, verify or restore)"),
            };
        }).ConfigureAwait(false);
    }

    /// <summary>Streams a consistent snapshot from the first endpoint that serves one into FILE.</summary>
    private static async Task<int> SaveAsync(string file, Options options)
    {
        // Ctrl-C or SIGTERM ends the save through its cleanup (FILE.tmp removed), not by ending the process where it is.
        using var interrupted = new CancellationTokenSource();
        var signal = 0;
        using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Interrupt);
        using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Interrupt);
        string? saved;
        try
        {
            saved = await new ClusterConnection(options).OnLeaderAsync((channel, headers) => SaveFromAsync(channel, headers, file, interrupted.Token), "no node served a snapshot").ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (interrupted.IsCancellationRequested)
        {
            Console.Error.WriteLine($"dcachectl snapshot save: interrupted; {Path.GetFullPath(file)} was not written");
            return 128 + signal; // as a shell reports a process a signal ended: 130 for SIGINT, 143 for SIGTERM
        }

        if (saved is null)
        {
            return 1;
        }

        Console.WriteLine(saved);
        return 0;

        void Interrupt(PosixSignalContext context)
        {
            // The first signal ends the save through its cleanup; a second one (the cleanup hangs on a dead disk, say)
            // ends the process as the signal would.
            if (Interlocked.CompareExchange(ref signal, context.Signal == PosixSignal.SIGINT ? 2 : 15, 0) == 0)
            {
                context.Cancel = true;
                interrupted.Cancel();
            }
        }
    }

    private static async Task<string> SaveFromAsync(GrpcChannel channel, Metadata headers, string file, CancellationToken interrupted)
    {
        try
        {
            return await ReceiveAsync(channel, headers, file, interrupted).ConfigureAwait(false);
        }
        catch (RpcException) when (interrupted.IsCancellationRequested)
        {
            throw new OperationCanceledException(interrupted);
        }
    }

    private static async Task<string> ReceiveAsync(GrpcChannel channel, Metadata headers, string file, CancellationToken interrupted)
    {
        interrupted.ThrowIfCancellationRequested();
        using var call = new Backup.BackupClient(channel).SaveSnapshot(new SaveSnapshotRequest(), headers, cancellationToken: interrupted);
        using var writer = new SnapshotFileWriter(file);
        SnapshotHeader? header = null;
        SnapshotTrailer? trailer = null;
        await foreach (var part in call.ResponseStream.ReadAllAsync(interrupted).ConfigureAwait(false))
        {
            switch (part.PartCase)
            {
                case SnapshotPart.PartOneofCase.Header when header is null:
                    header = part.Header;
                    writer.WriteHeader(header);
                    break;
                case SnapshotPart.PartOneofCase.Data when header is not null && trailer is null:
                    writer.WriteData(part.Data.Span);
                    break;
                case SnapshotPart.PartOneofCase.Trailer when header is not null && trailer is null:
                    trailer = part.Trailer;
                    break;
                default:
                    throw new SnapshotFileException($"{channel.Target} sent the snapshot out of order ({part.PartCase})");
            }
        }

        if (header is null || trailer is null)
        {
            throw new SnapshotFileException($"{channel.Target} ended the snapshot stream before its end");
        }

        if (trailer.Size != writer.DataSize || trailer.Crc32C != writer.DataCrc)
        {
            throw new SnapshotFileException(string.Create(CultureInfo.InvariantCulture,
                $"the snapshot from {channel.Target} arrived as {writer.DataSize} bytes with CRC-32C {writer.DataCrc:x8}, but was sent as {trailer.Size} bytes with {trailer.Crc32C:x8}"));
        }

        writer.Finish();
        return string.Create(CultureInfo.InvariantCulture,
            $"saved {Path.GetFullPath(file)}: cluster {header.ClusterId}, index {header.Index}, term {header.Term}, {trailer.KeyCount} keys, {writer.DataSize} bytes of state, from node {header.NodeId} ({channel.Target})");
    }

    /// <summary>Checks FILE completely and prints what it holds.</summary>
    private static int Verify(string file)
    {
        var snapshot = VerifiedSnapshot.Check(file);
        var header = snapshot.Header;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            file:       {Path.GetFullPath(file)}
            format:     version {SnapshotFile.FormatVersion}, {snapshot.FileSize} bytes, CRC-32C {snapshot.FileCrc:x8} ok
            cluster id: {header.ClusterId}
            index:      {header.Index}
            term:       {header.Term}
            members:    {string.Join(", ", header.Members.Select(m => $"{m.Id}={(m.Address.Length == 0 ? "?" : m.Address)} ({(m.Voter ? "voter" : "learner")})"))}
            taken:      by node {header.NodeId} at {DateTimeOffset.FromUnixTimeMilliseconds(header.CreatedUnixMs):u}
            keys:       {snapshot.KeyCount}
            state:      {snapshot.DataSize} bytes, decoded and its SHA-256 checked
            """));
        return 0;
    }

    /// <summary>Seeds an empty data directory for one member of a new cluster from FILE (offline, once per member).</summary>
    private static int Restore(string file, Options options)
    {
        var directory = Path.GetFullPath(options.Require("data"));
        var nodeId = options.GetId("node-id");
        var clusterId = options.Require("cluster-id");
        var members = ClusterMembers.Parse(options.Require("initial-cluster"), requirePort: true);
        if (!members.ContainsKey(nodeId))
        {
            throw new FormatException($"--initial-cluster must list --node-id {nodeId}");
        }

        // A first look, before the long check of FILE; the one that counts is made under the directory's lock.
        if (!NodeStorage.IsEmptyForRestore(directory))
        {
            Console.Error.WriteLine($"dcachectl snapshot restore: {directory} is not empty; restore only seeds a new, empty data directory");
            return 1;
        }

        var snapshot = VerifiedSnapshot.Check(file);
        if (clusterId == snapshot.Header.ClusterId)
        {
            Console.Error.WriteLine($"dcachectl snapshot restore: --cluster-id must name a new cluster, not the snapshot's own ({clusterId}), so that nodes of the old cluster are refused by the new one");
            return 1;
        }

        var metadata = new SnapshotMetadata(snapshot.Header.Index, snapshot.Header.Term, Membership.Of(members.Keys, contexts: members));
        var created = !Directory.Exists(directory);
        try
        {
            using var storage = NodeStorage.OpenForRestore(new StorageOptions { DataDirectory = directory }, nodeId, clusterId);
            // dcachectl ships with the node's build: the new cluster is founded with its format.
            storage.Metadata.RecordFoundingEntryFormat(CacheCommand.FormatVersion);
            // Members seeded from one backup with one member list agree; any other mix refuses each other's traffic.
            storage.Metadata.RecordFoundingLog(FoundingLog.OfRestore(clusterId, string.Create(CultureInfo.InvariantCulture,
                $"{snapshot.Header.ClusterId}/{snapshot.Header.Index}/{snapshot.Header.Term}/{snapshot.FileSize}/{snapshot.FileCrc:x8}"), metadata.Membership));
            using (var reader = new SnapshotFileReader(file))
            using (var writer = storage.Snapshots.BeginSnapshot(metadata))
            {
                var buffer = new byte[1 << 16];
                int read;
                while ((read = reader.Data.Read(buffer)) > 0)
                {
                    writer.Write(buffer.AsSpan(0, read));
                }

                writer.Complete();
            }

            // The log starts at the snapshot, committed up to it: the node loads it on start and continues after it.
            storage.RaftLog.Save(new HardState(metadata.Term, 0, metadata.Index), [], metadata);
            storage.FinishRestore();
        }
        catch (Exception ex) when (ex is not RestoreRefusedException)
        {
            // The directory was claimed (empty, under its lock): what is in it now is this restore's.
            if (created && Directory.Exists(directory))
            {
                Directory.Delete(directory, recursive: true);
            }

            throw;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"restored node {nodeId} of cluster {clusterId} into {directory}: snapshot index {metadata.Index}, term {metadata.Term}, {snapshot.KeyCount} keys, voters {string.Join(",", members.Keys)} (from cluster {snapshot.Header.ClusterId})"));
        return 0;
    }

    /// <summary>A snapshot file read twice: once for its checksum, then to decode the cache state it carries.</summary>
    private sealed record VerifiedSnapshot(SnapshotHeader Header, long FileSize, uint FileCrc, ulong DataSize, int KeyCount)
    {
        public static VerifiedSnapshot Check(string file)
        {
            using (var first = new SnapshotFileReader(file))
            {
                first.ReadToEnd();
            }

            using var reader = new SnapshotFileReader(file);
            CacheStateMachine state;
            try
            {
                state = CacheStateMachine.FromSnapshot(reader.Data);
            }
            catch (InvalidDataException ex)
            {
                throw new SnapshotFileException($"{Path.GetFullPath(file)} has a sound checksum but its cache state does not decode: {ex.Message}");
            }

            reader.ReadToEnd();
            if (state.AppliedIndex != reader.Header.Index)
            {
                throw new SnapshotFileException(string.Create(CultureInfo.InvariantCulture,
                    $"{Path.GetFullPath(file)} claims index {reader.Header.Index} but its cache state is at index {state.AppliedIndex}"));
            }

            return new VerifiedSnapshot(reader.Header, reader.FileSize, reader.FileCrc, reader.DataSize, state.StoredKeyCount);
        }
    }
}
