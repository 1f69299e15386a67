using Dcache.Integration.Tests.Support;
using Xunit.Abstractions;

namespace Dcache.Integration.Tests;

/// <summary>
/// An option dcachectl does not take, or one given twice, is a usage error (exit 2) before anything is done: a
/// misspelt `--to` must not hand leadership to another node, a misspelt `--endpoints` must not reach the dev cluster's.
/// </summary>
public sealed class DcachectlOptionsTests(ITestOutputHelper output)
{
    [Fact]
    public async Task AnOptionACommandDoesNotTakeOrOneGivenTwiceIsAUsageErrorBeforeAnythingIsDone()
    {
        var root = Directory.CreateTempSubdirectory("dcachectl-options-");
        try
        {
            var unused = $"http://127.0.0.1:{FreePorts.Allocate(1)[0]}";
            string[] cluster = ["--endpoints", unused, "--cluster-id", "c", "--secret", "s"];

            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["leader", "transfer", "--target", "2", .. cluster]), 2, "unknown option --target");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["member", "remove", "--id", "2", "--id", "3", .. cluster]), 2, "--id is given twice");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["member", "add", "--id", "4", "--adress", "http://127.0.0.1:1", .. cluster]), 2, "unknown option --adress");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--clusterid", "c", .. cluster]), 2, "unknown option --clusterid");
            // A forgotten value: the next option was taken for it (the secret "--cluster-id", the dev cluster's id).
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", unused, "--secret", "--cluster-id", "c"]), 2, "--secret has no value");
            // dev's numbers and programs: a line and an exit code, not a stack trace.
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["dev", "--nodes", "three"]), 2, "dcachectl dev:");
            // Checked before anything starts: it ended in "Invalid URI: Invalid port specified." from the first node.
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["dev", "--base-port", "70000"]), 2, "dcachectl dev: --base-port must be between 1 and 63535");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["dev", "--gateway-port", "0"]), 2, "dcachectl dev: --gateway-port must be between 1 and 65535");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["dev", "--node-dll", Path.Combine(root.FullName, "missing.dll"), "--gateway-dll", Path.Combine(root.FullName, "missing-gateway.dll"),
                "--data", Path.Combine(root.FullName, "dev"), "--base-port", FreePorts.Allocate(1)[0].ToString(System.Globalization.CultureInfo.InvariantCulture)]), 1, "missing.dll");

            // A damaged metadata database: one line, exit 1.
            var damaged = Directory.CreateDirectory(Path.Combine(root.FullName, "damaged"));
            await File.WriteAllTextAsync(Path.Combine(damaged.FullName, "meta.db"), "this is not an SQLite database, and long enough to be read as one's header");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "inspect", "--data", damaged.FullName), 1, "dcachectl recover");

            var backup = Path.Combine(root.FullName, "backup.dcsnap");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", backup, "--secrett", "s", .. cluster]), 2, "unknown option --secrett");
            Assert.False(File.Exists(backup));

            await File.WriteAllTextAsync(backup, "not a snapshot");
            var target = Path.Combine(root.FullName, "node1");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "restore", backup, "--data", target, "--node-id", "1", "--cluster-id", "new",
                "--initial-cluster", "1=http://127.0.0.1:1", "--node", "2"), 2, "unknown option --node");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", backup, "--data", target), 2, "unknown option --data");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "force-new-cluster", "--data", target, "--cluster-id", "new", "--force", "yes"), 2, "unknown option --force");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "recover", "inspect", "--data", target, "--cluster-id", "new"), 2, "unknown option --cluster-id");
            Assert.False(Directory.Exists(target));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }

    /// <summary>Help asked for after a command was an unknown option or verb (exit code 2).</summary>
    [Theory]
    [InlineData("member", "--help")]
    [InlineData("status", "-h")]
    [InlineData("snapshot", "restore", "--help")]
    public async Task HelpAfterACommandPrintsTheUsage(params string[] args)
    {
        var help = await Dcachectl.RunAsync(output, args);
        Assert.True(help.Exit == 0, help.ToString());
        Assert.Contains("usage: dcachectl COMMAND [options]", help.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnEndpointThatIsNotAnHttpUrlOrNoEndpointAtAllIsAUsageError()
    {
        // Without a scheme, "localhost:7001" parses as a URI of scheme "localhost", which no gRPC channel takes.
        string[] credentials = ["--cluster-id", "c", "--secret", "s"];
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["member", "list", "--endpoints", "localhost:7001", .. credentials]), 2, "'localhost:7001' is not an http:// URL");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["leader", "transfer", "--endpoints", "http://127.0.0.1:1,ftp://127.0.0.1:7001", .. credentials]), 2, "'ftp://127.0.0.1:7001' is not an http:// URL");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", "localhost:7001", .. credentials]), 2, "'localhost:7001' is not an http:// URL");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", "http://127.0.0.1", .. credentials]), 2, "'http://127.0.0.1' names no port");
        var directory = Directory.CreateTempSubdirectory("dcachectl-verify-a-directory-");
        try
        {
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, "snapshot", "verify", directory.FullName), 1, $"{directory.FullName} is a directory: name the backup file in it");
        }
        finally
        {
            directory.Delete();
        }

        // An unset variable in `--endpoints "$NODES"`: status asked nobody, and said all was well.
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", "", .. credentials]), 2, "--endpoints lists no endpoint");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", " , ", .. credentials]), 2, "--endpoints lists no endpoint");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", "http://127.0.0.1:1,,http://127.0.0.1:2", .. credentials]), 2, "has an empty entry");
        Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["status", "--endpoints", "http://127.0.0.1:1,", .. credentials]), 2, "has an empty entry");
        var root = Directory.CreateTempSubdirectory("dcachectl-endpoints-");
        try
        {
            var backup = Path.Combine(root.FullName, "backup.dcsnap");
            Dcachectl.AssertFails(await Dcachectl.RunAsync(output, ["snapshot", "save", backup, "--endpoints", "localhost:7001", .. credentials]), 2, "'localhost:7001' is not an http:// URL");
            Assert.False(File.Exists(backup));
        }
        finally
        {
            root.Delete(recursive: true);
        }
    }
}
