namespace Dcache.Storage;

/// <summary>What <see cref="StorageVerifier.Verify"/> found.</summary>
/// <param name="Problems">Corruption of durable data: the node would refuse to start on it. Each names a file and offset.</param>
/// <param name="Notes">Things that are not errors: a torn tail that opening will drop, counts.</param>
public sealed record VerifyReport(IReadOnlyList<string> Problems, IReadOnlyList<string> Notes)
{
    public bool IsHealthy => Problems.Count == 0;

    public override string ToString() =>
        string.Join('\n', Problems.Select(p => "PROBLEM " + p).Concat(Notes.Select(n => "ok      " + n)));
}

/// <summary>
/// Offline verification of a node's data directory, for operators' tools (dcachectl) and for tests: checks
/// meta.db (SQLite integrity and schema version), every record of the Raft log (frame, CRC-32C, chain, index
/// continuity) and every catalogued snapshot (chunk checksums and whole-snapshot checksum). Reads only; never
/// repairs. Run it on a stopped node (it does not coordinate with a running one).
/// </summary>
public static class StorageVerifier
{
    public static VerifyReport Verify(StorageOptions options)
    {
        options.Validate();
        var problems = new List<string>();
        var notes = new List<string>();
        VerifyMetadata(options, problems, notes);
        VerifyRaftLog(options, problems, notes);
        VerifySnapshots(options, problems, notes);
        return new VerifyReport(problems, notes);
    }

    private static void VerifyMetadata(StorageOptions options, List<string> problems, List<string> notes)
    {
        var path = Path.Combine(options.DataDirectory, MetadataStore.FileName);
        if (!File.Exists(path))
        {
            problems.Add($"{path}: missing");
            return;
        }

        try
        {
            using var metadata = MetadataStore.Open(options.DataDirectory);
            if (metadata.CheckIntegrity() is { } integrity)
            {
                problems.Add($"{path}: SQLite integrity check failed: {integrity}");
            }

            var (term, vote) = metadata.LoadTermAndVote();
            notes.Add($"{path}: schema version {metadata.SchemaVersion}, node {metadata.NodeId?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(unset)"}, cluster {metadata.ClusterId ?? "(unset)"}, term {term}, vote {vote}");
        }
        catch (Exception e) when (e is Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            problems.Add($"{path}: {e.Message}");
        }
    }

    private static void VerifyRaftLog(StorageOptions options, List<string> problems, List<string> notes)
    {
        var geometry = new LogGeometry(Path.GetFullPath(options.RaftLogDirectory), "log", options.RaftLog.PageSizeBits, options.RaftLog.SegmentSizeBits);
        var recovered = DurableLogCommitManager.ReadRecovered(geometry);
        var state = new RaftLogState(recovered?.ReplayBase ?? ReplayBase.Empty, 0);
        try
        {
            var begin = recovered?.BeginAddress ?? LogGeometry.FirstValidAddress;
            var until = recovered?.UntilAddress ?? LogGeometry.FirstValidAddress;
            var scan = LogScanner.Scan(geometry, begin, until, new FasterRaftStorage.ReplayVisitor(state, geometry));
            notes.Add($"{geometry.Directory}: {scan.RecordCount} records intact, entries [{state.FirstIndex}, {state.LastIndex}], commit {state.Commit}, snapshot {state.Snapshot.Index}/{state.Snapshot.Term}");
            if (scan.StopReason is not null)
            {
                notes.Add($"{geometry.Describe(scan.EndAddress)} offset {geometry.FileOffsetOf(scan.EndAddress)}: torn tail after the commit point ({scan.StopReason}); opening drops it");
            }
        }
        catch (StorageCorruptionException e)
        {
            problems.Add(e.Message);
        }
    }

    private static void VerifySnapshots(StorageOptions options, List<string> problems, List<string> notes)
    {
        if (!Directory.Exists(options.SnapshotDirectory) || !File.Exists(Path.Combine(options.DataDirectory, MetadataStore.FileName)))
        {
            return;
        }

        using var metadata = MetadataStore.Open(options.DataDirectory);
        var geometry = SnapshotStore.GeometryFor(options);
        foreach (var entry in metadata.ListSnapshots())
        {
            try
            {
                var size = SnapshotStore.ReadAndCheck(geometry, entry, _ => { });
                notes.Add($"snapshot {entry.Id} at {entry.Metadata.Index}/{entry.Metadata.Term}: {size} bytes, checksum ok");
            }
            catch (StorageCorruptionException e)
            {
                problems.Add($"snapshot {entry.Id}: {e.Message}");
            }
        }
    }
}
