using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Dcache.Raft;

namespace Dcache.Storage;

/// <summary>
/// Names what a node's log was founded from, so that nodes whose logs began apart never exchange Raft traffic. Logs
/// founded apart can hold different entries at one index and term (a node started without Join whose InitialCluster
/// differs from the founding list writes other membership entries at term 1; two survivors each made into the new
/// cluster by force-new-cluster append different entries at one term; members seeded from different backups start
/// at different states), and Raft, which compares entries by index and term only, would take one for the other.
/// etcd refuses such peers by a cluster id derived from its initial membership; this is that check.
/// </summary>
public static class FoundingLog
{
    /// <summary>
    /// A founding member's log: its cluster id and founding members (founding members with the same ids agree). The
    /// members' addresses are left out: founding entries that differ only in them are the same membership (each node
    /// may reach a peer at another address, through a proxy say), and Raft takes them alike without harm.
    /// </summary>
    public static string OfBootstrap(string clusterId, Membership founding)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Append(hash, clusterId);
        AppendMembers(hash, founding);
        return "bootstrap:" + Short(hash);
    }

    /// <summary>A member seeded from a backup: the backup's identity and the members' ids (members seeded alike agree).</summary>
    public static string OfRestore(string clusterId, string backupIdentity, Membership members)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Append(hash, clusterId);
        Append(hash, backupIdentity);
        AppendMembers(hash, members);
        return "restore:" + Short(hash);
    }

    /// <summary>A survivor made into a new cluster alone: unique to this recovery, so a second survivor recovered apart is refused.</summary>
    public static string OfRecovery() => "recovery:" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));

    private static void AppendMembers(IncrementalHash hash, Membership membership)
    {
        foreach (var voter in membership.Voters.Order())
        {
            Append(hash, string.Create(CultureInfo.InvariantCulture, $"voter {voter}"));
        }

        foreach (var learner in membership.Learners.Order())
        {
            Append(hash, string.Create(CultureInfo.InvariantCulture, $"learner {learner}"));
        }
    }

    private static void Append(IncrementalHash hash, string text)
    {
        hash.AppendData(Encoding.UTF8.GetBytes(text));
        hash.AppendData([0]);
    }

    private static string Short(IncrementalHash hash) => Convert.ToHexStringLower(hash.GetHashAndReset().AsSpan(0, 8));
}
