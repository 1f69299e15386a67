using System.Globalization;
using Dcache.Raft;
using Microsoft.Data.Sqlite;

namespace Dcache.Storage;

/// <summary>One snapshot in the catalogue: which Raft state it captures and where its chunks lie in the snapshot log.</summary>
public sealed record SnapshotCatalogueEntry(
    long Id,
    SnapshotMetadata Metadata,
    long BeginAddress,
    long EndAddress,
    long SizeBytes,
    uint Crc32C,
    int ChunkCount,
    DateTimeOffset CreatedAt);

/// <summary>
/// The node's metadata in SQLite (<c>meta.db</c>, WAL journal, synchronous=FULL so every transaction is on disk
/// when it commits): node and cluster identity, the Raft term and vote, the newest membership the node applied (or
/// its latest snapshot's), and the snapshot catalogue. The schema version is SQLite's user_version; <see cref="Migrations"/> upgrade it
/// forward, one step per version, each in its own transaction.
/// Thread-safe: one connection, its uses serialised inside.
/// </summary>
public sealed class MetadataStore : IDisposable
{
    public const string FileName = "meta.db";

    /// <summary>Migration i takes the schema from version i to i + 1.</summary>
    private static readonly string[] Migrations =
    [
        """
        CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE hard_state (id INTEGER PRIMARY KEY CHECK (id = 1), term INTEGER NOT NULL, vote INTEGER NOT NULL);
        INSERT INTO hard_state (id, term, vote) VALUES (1, 0, 0);
        CREATE TABLE membership (id INTEGER PRIMARY KEY CHECK (id = 1), raft_index INTEGER NOT NULL, voters TEXT NOT NULL, learners TEXT NOT NULL);
        CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            raft_index INTEGER NOT NULL,
            raft_term INTEGER NOT NULL,
            voters TEXT NOT NULL,
            learners TEXT NOT NULL,
            begin_address INTEGER NOT NULL,
            end_address INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL,
            crc32c INTEGER NOT NULL,
            chunk_count INTEGER NOT NULL,
            created_unix_ms INTEGER NOT NULL);
        """,
        // Members' addresses travel with the membership (JSON {"id": "address"}); older rows have none.
        """
        ALTER TABLE membership ADD COLUMN contexts TEXT NOT NULL DEFAULT '';
        ALTER TABLE snapshots ADD COLUMN contexts TEXT NOT NULL DEFAULT '';
        """,
    ];

    private readonly SqliteConnection _connection;
    // One connection, used by the Raft driver (term and vote, each applied membership) and by the snapshot store
    // (catalogue), from different threads.
    private readonly Lock _gate = new();

    private MetadataStore(SqliteConnection connection, string path)
    {
        _connection = connection;
        FilePath = path;
    }

    /// <summary>The schema version this code writes.</summary>
    public static int CurrentSchemaVersion => Migrations.Length;

    public string FilePath { get; }

    public int SchemaVersion => (int)(long)Scalar("PRAGMA user_version")!;

    public static MetadataStore Open(string directory)
    {
        NativeFileSync.CreateDirectoryDurably(directory);
        var path = Path.Combine(directory, FileName);
        var created = !File.Exists(path);
        var connection = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
        }.ToString());
        connection.Open();
        var store = new MetadataStore(connection, path);
        try
        {
            store.Execute("PRAGMA journal_mode=WAL");
            store.Execute("PRAGMA synchronous=FULL");
            store.Migrate();
            if (created)
            {
                // SQLite syncs the database and WAL files, not the directory entries that name them.
                NativeFileSync.SyncDirectory(directory);
            }
        }
        catch
        {
            store.Dispose();
            throw;
        }

        return store;
    }

    /// <summary>Records this node's identity on first start; afterwards refuses to run as a different node or cluster.</summary>
    public void EnsureIdentity(ulong nodeId, string clusterId)
    {
        lock (_gate)
        {
            var storedNode = GetIdentity("node_id");
            var storedCluster = GetIdentity("cluster_id");
            var node = nodeId.ToString(CultureInfo.InvariantCulture);
            if (storedNode is null && storedCluster is null)
            {
                using var transaction = _connection.BeginTransaction();
                SetIdentity("node_id", node, transaction);
                SetIdentity("cluster_id", clusterId, transaction);
                transaction.Commit();
                return;
            }

            if (storedNode != node || storedCluster != clusterId)
            {
                throw new DataDirectoryRefusedException(
                    $"{FilePath} belongs to node {storedNode} of cluster {storedCluster}, not node {node} of cluster {clusterId}");
            }
        }
    }

    /// <summary>Moves the data to a new cluster (offline majority-loss recovery), so members of the old cluster are refused.</summary>
    public void ReplaceClusterId(string clusterId)
    {
        lock (_gate)
        {
            using var command = Command("UPDATE identity SET value = $value WHERE key = 'cluster_id'");
            command.Parameters.AddWithValue("$value", clusterId);
            if (command.ExecuteNonQuery() != 1)
            {
                throw new InvalidOperationException($"{FilePath} records no cluster id to replace");
            }
        }
    }

    /// <summary>
    /// Records the newest log entry format of the build that founded this node's log (bootstrapping a new cluster or
    /// seeding one from a backup); a later founding of the same empty log, after a crash, replaces it.
    /// </summary>
    public void RecordFoundingEntryFormat(byte format)
    {
        lock (_gate)
        {
            using var command = Command("INSERT OR REPLACE INTO identity (key, value) VALUES ('founding_entry_format', $value)");
            command.Parameters.AddWithValue("$value", format.ToString(CultureInfo.InvariantCulture));
            command.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// Records what this node's log was founded from (<see cref="Storage.FoundingLog"/>): at bootstrap, restore and
    /// force-new-cluster; a later founding of the same empty log, after a crash, replaces it.
    /// </summary>
    public void RecordFoundingLog(string foundingLog)
    {
        lock (_gate)
        {
            using var command = Command("INSERT OR REPLACE INTO identity (key, value) VALUES ('founding_log', $value)");
            command.Parameters.AddWithValue("$value", foundingLog);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>What <see cref="RecordFoundingLog"/> recorded; null for a node that joined, or one founded before it was recorded.</summary>
    public string? FoundingLog => LockedIdentity("founding_log");

    /// <summary>The format <see cref="RecordFoundingEntryFormat"/> recorded; null for a node that joined, or one founded before it was recorded.</summary>
    public byte? FoundingEntryFormat => LockedIdentity("founding_entry_format") is { } text ? byte.Parse(text, CultureInfo.InvariantCulture) : null;

    public ulong? NodeId => LockedIdentity("node_id") is { } text ? ulong.Parse(text, CultureInfo.InvariantCulture) : null;

    public string? ClusterId => LockedIdentity("cluster_id");

    public (ulong Term, ulong Vote) LoadTermAndVote()
    {
        lock (_gate)
        {
            using var command = Command("SELECT term, vote FROM hard_state WHERE id = 1");
            using var reader = command.ExecuteReader();
            reader.Read();
            return ((ulong)reader.GetInt64(0), (ulong)reader.GetInt64(1));
        }
    }

    /// <summary>Durable when it returns: one SQLite transaction, one fsync of the WAL.</summary>
    public void SaveTermAndVote(ulong term, ulong vote)
    {
        lock (_gate)
        {
            using var command = Command("UPDATE hard_state SET term = $term, vote = $vote WHERE id = 1");
            command.Parameters.AddWithValue("$term", (long)term);
            command.Parameters.AddWithValue("$vote", (long)vote);
            command.ExecuteNonQuery();
        }
    }

    public (ulong Index, Membership Membership)? LoadMembership()
    {
        lock (_gate)
        {
            using var command = Command("SELECT raft_index, voters, learners, contexts FROM membership WHERE id = 1");
            using var reader = command.ExecuteReader();
            if (!reader.Read())
            {
                return null;
            }

            return ((ulong)reader.GetInt64(0), Membership.Of(MembershipCodec.FromText(reader.GetString(1)), MembershipCodec.FromText(reader.GetString(2)), MembershipCodec.ContextsFromText(reader.GetString(3))));
        }
    }

    /// <summary>
    /// Records the membership in effect as of log index <paramref name="index"/>, unless a newer one is recorded
    /// already: a node records each membership it applies, and a snapshot's (older) one when it compacts behind it.
    /// The members' addresses are kept; which of them an update set is not (the Raft log's snapshot records, which
    /// the node starts from, keep that).
    /// </summary>
    public void SaveMembership(ulong index, Membership membership)
    {
        lock (_gate)
        {
            using var command = Command(
                "INSERT INTO membership (id, raft_index, voters, learners, contexts) VALUES (1, $index, $voters, $learners, $contexts) " +
                "ON CONFLICT (id) DO UPDATE SET raft_index = excluded.raft_index, voters = excluded.voters, learners = excluded.learners, contexts = excluded.contexts " +
                "WHERE excluded.raft_index >= membership.raft_index");
            command.Parameters.AddWithValue("$index", (long)index);
            command.Parameters.AddWithValue("$voters", MembershipCodec.ToText(membership.Voters));
            command.Parameters.AddWithValue("$learners", MembershipCodec.ToText(membership.Learners));
            command.Parameters.AddWithValue("$contexts", MembershipCodec.ContextsToText(membership));
            command.ExecuteNonQuery();
        }
    }

    public void AddSnapshot(SnapshotCatalogueEntry entry)
    {
        lock (_gate)
        {
            using var command = Command(
                "INSERT INTO snapshots (id, raft_index, raft_term, voters, learners, begin_address, end_address, size_bytes, crc32c, chunk_count, created_unix_ms, contexts) " +
                "VALUES ($id, $index, $term, $voters, $learners, $begin, $end, $size, $crc, $chunks, $created, $contexts)");
            command.Parameters.AddWithValue("$id", entry.Id);
            command.Parameters.AddWithValue("$index", (long)entry.Metadata.Index);
            command.Parameters.AddWithValue("$term", (long)entry.Metadata.Term);
            command.Parameters.AddWithValue("$voters", MembershipCodec.ToText(entry.Metadata.Membership.Voters));
            command.Parameters.AddWithValue("$learners", MembershipCodec.ToText(entry.Metadata.Membership.Learners));
            command.Parameters.AddWithValue("$contexts", MembershipCodec.ContextsToText(entry.Metadata.Membership));
            command.Parameters.AddWithValue("$begin", entry.BeginAddress);
            command.Parameters.AddWithValue("$end", entry.EndAddress);
            command.Parameters.AddWithValue("$size", entry.SizeBytes);
            command.Parameters.AddWithValue("$crc", (long)entry.Crc32C);
            command.Parameters.AddWithValue("$chunks", entry.ChunkCount);
            command.Parameters.AddWithValue("$created", entry.CreatedAt.ToUnixTimeMilliseconds());
            command.ExecuteNonQuery();
        }
    }

    public void RemoveSnapshot(long id)
    {
        lock (_gate)
        {
            using var command = Command("DELETE FROM snapshots WHERE id = $id");
            command.Parameters.AddWithValue("$id", id);
            command.ExecuteNonQuery();
        }
    }

    /// <summary>The catalogue, newest (highest Raft index, then id) first.</summary>
    public IReadOnlyList<SnapshotCatalogueEntry> ListSnapshots()
    {
        lock (_gate)
        {
            using var command = Command(
                "SELECT id, raft_index, raft_term, voters, learners, begin_address, end_address, size_bytes, crc32c, chunk_count, created_unix_ms, contexts " +
                "FROM snapshots ORDER BY raft_index DESC, id DESC");
            using var reader = command.ExecuteReader();
            var list = new List<SnapshotCatalogueEntry>();
            while (reader.Read())
            {
                var membership = Membership.Of(MembershipCodec.FromText(reader.GetString(3)), MembershipCodec.FromText(reader.GetString(4)), MembershipCodec.ContextsFromText(reader.GetString(11)));
                list.Add(new SnapshotCatalogueEntry(
                    reader.GetInt64(0),
                    new SnapshotMetadata((ulong)reader.GetInt64(1), (ulong)reader.GetInt64(2), membership),
                    reader.GetInt64(5),
                    reader.GetInt64(6),
                    reader.GetInt64(7),
                    (uint)reader.GetInt64(8),
                    reader.GetInt32(9),
                    DateTimeOffset.FromUnixTimeMilliseconds(reader.GetInt64(10))));
            }

            return list;
        }
    }

    /// <summary>Runs SQLite's own integrity check; null when the database is sound, else its findings.</summary>
    public string? CheckIntegrity()
    {
        lock (_gate)
        {
            var result = Scalar("PRAGMA integrity_check") as string;
            return result == "ok" ? null : result;
        }
    }

    public void Dispose() => _connection.Dispose();

    private void Migrate()
    {
        var version = SchemaVersion;
        if (version > Migrations.Length)
        {
            // A newer build's data (an upgrade rolled back, or a newer dcachectl's recovery): an operator's matter.
            throw new DataDirectoryRefusedException(
                $"{FilePath} has schema version {version}, newer than this build understands ({Migrations.Length}): run the build that wrote it");
        }

        for (var step = version; step < Migrations.Length; step++)
        {
            using var transaction = _connection.BeginTransaction();
            using (var command = Command(Migrations[step], transaction))
            {
                command.ExecuteNonQuery();
            }

            using (var bump = Command($"PRAGMA user_version = {step + 1}", transaction))
            {
                bump.ExecuteNonQuery();
            }

            transaction.Commit();
        }
    }

    private string? LockedIdentity(string key)
    {
        lock (_gate)
        {
            return GetIdentity(key);
        }
    }

    private string? GetIdentity(string key)
    {
        using var command = Command("SELECT value FROM identity WHERE key = $key");
        command.Parameters.AddWithValue("$key", key);
        return command.ExecuteScalar() as string;
    }

    private void SetIdentity(string key, string value, SqliteTransaction transaction)
    {
        using var command = Command("INSERT INTO identity (key, value) VALUES ($key, $value)", transaction);
        command.Parameters.AddWithValue("$key", key);
        command.Parameters.AddWithValue("$value", value);
        command.ExecuteNonQuery();
    }

    private void Execute(string sql)
    {
        using var command = Command(sql);
        command.ExecuteNonQuery();
    }

    private object? Scalar(string sql)
    {
        using var command = Command(sql);
        return command.ExecuteScalar();
    }

    private SqliteCommand Command(string sql, SqliteTransaction? transaction = null)
    {
        var command = _connection.CreateCommand();
        command.CommandText = sql;
        command.Transaction = transaction;
        return command;
    }
}
