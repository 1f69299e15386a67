using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace Dcache.Ctl;

/// <summary>
/// `dcachectl dev`: a local cluster of node processes on 127.0.0.1 with data under ./data, for trying Dcache out.
/// Ctrl-C stops every node gracefully (each hands over leadership before it exits).
/// </summary>
internal static class DevCluster
{
    public const string ClusterId = "dcache-dev";
    public const string Secret = "dev-secret";
    public const int DefaultBasePort = 7001;

    public static async Task<int> RunAsync(Options options)
    {
        var count = options.GetInt("nodes", 3);
        var basePort = options.GetInt("base-port", DefaultBasePort);
        var data = Path.GetFullPath(options.Get("data", "data"));
        // Looked for only when not given: a copy of dcachectl outside the repository finds no build, and says so.
        var nodeDll = options.Has("node-dll") ? options.Get("node-dll", "") : FindProgram("Node", "Dcache.Node.dll");
        if (count < 1 || count > 9)
        {
            Console.Error.WriteLine("dcachectl dev: --nodes must be between 1 and 9");
            return 2;
        }

        var readRouting = options.Get("read-routing", "leader");
        if (!readRouting.Equals("leader", StringComparison.OrdinalIgnoreCase) && !readRouting.Equals("members", StringComparison.OrdinalIgnoreCase))
        {
            Console.Error.WriteLine("dcachectl dev: --read-routing must be leader or members");
            return 2;
        }

        // Nodes listen on base-port + 0..8 (gRPC) and + 1000..1008 (HTTP), the gateway's HTTP on base-port + 2000.
        if (basePort < 1 || basePort > 65535 - 2000)
        {
            Console.Error.WriteLine($"dcachectl dev: --base-port must be between 1 and {65535 - 2000} (the nodes' and gateway's HTTP ports lie up to 2000 above it)");
            return 2;
        }

        var gatewayPort = options.GetInt("gateway-port", 6379);
        if (gatewayPort is < 1 or > 65535)
        {
            Console.Error.WriteLine("dcachectl dev: --gateway-port must be between 1 and 65535");
            return 2;
        }

        var gatewayDll = options.Has("gateway-dll") ? options.Get("gateway-dll", "") : FindProgram("Gateway", "Dcache.Gateway.dll");
        foreach (var (option, dll) in new[] { ("--node-dll", nodeDll), ("--gateway-dll", gatewayDll) })
        {
            if (!File.Exists(dll))
            {
                throw new FileNotFoundException($"{option} {dll} does not exist");
            }
        }

        var members = string.Join(",", Enumerable.Range(1, count).Select(id => $"{id}=http://127.0.0.1:{basePort + id - 1}"));
        var nodeUrls = string.Join(",", Enumerable.Range(1, count).Select(id => $"http://127.0.0.1:{basePort + id - 1}"));
        var processes = new List<Process>();
        var names = new Dictionary<Process, string>();
        var endedEarly = new HashSet<Process>();
        using var stopping = new CancellationTokenSource();
        using var onInterrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var onTerminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);

        for (var id = 1; id <= count; id++)
        {
            var info = new ProcessStartInfo("dotnet") { UseShellExecute = false };
            info.ArgumentList.Add(nodeDll);
            foreach (var arg in new[]
            {
                $"--Dcache:Node:NodeId={id}",
                $"--Dcache:Node:ClusterId={ClusterId}",
                $"--Dcache:Node:ClusterSecret={Secret}",
                $"--Dcache:Node:DataDirectory={Path.Combine(data, $"node{id}")}",
                $"--Dcache:Node:GrpcUrl=http://127.0.0.1:{basePort + id - 1}",
                $"--Dcache:Node:HttpUrl=http://127.0.0.1:{basePort + 1000 + id - 1}",
                $"--Dcache:Node:InitialCluster={members}",
            })
            {
                info.ArgumentList.Add(arg);
            }

            processes.Add(StartNamed(info, string.Create(CultureInfo.InvariantCulture, $"node {id}")));
        }

        var gateway = new ProcessStartInfo("dotnet") { UseShellExecute = false };
        gateway.ArgumentList.Add(gatewayDll);
        gateway.ArgumentList.Add($"--Dcache:Gateway:Port={gatewayPort}");
        gateway.ArgumentList.Add($"--Dcache:Gateway:HttpUrl=http://127.0.0.1:{basePort + 2000}");
        gateway.ArgumentList.Add($"--Dcache:Gateway:Cluster:Nodes={nodeUrls}");
        gateway.ArgumentList.Add($"--Dcache:Gateway:Cluster:ClusterId={ClusterId}");
        gateway.ArgumentList.Add($"--Dcache:Gateway:Cluster:ClusterSecret={Secret}");
        // Every node shares this machine's cores: reads spread over followers would cost about twice the CPU of
        // reads at the leader (docs/benchmarks.md), and there is no second machine to spread them to.
        gateway.ArgumentList.Add($"--Dcache:Gateway:Cluster:ReadRouting={readRouting}");
        processes.Add(StartNamed(gateway, "gateway"));

        Console.WriteLine($"Dcache dev cluster: {count} nodes and a gateway, data under {data}");
        Console.WriteLine($"  connect: redis-cli -p {gatewayPort}");
        for (var id = 1; id <= count; id++)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  node {id}: gRPC http://127.0.0.1:{basePort + id - 1}, health http://127.0.0.1:{basePort + 1000 + id - 1}/health"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  gateway: health and metrics http://127.0.0.1:{basePort + 2000}/health, /metrics"));
        // status's default endpoints are the default base port's: name this cluster's, so the line works as printed.
        Console.WriteLine($"Status: dotnet run --project src/Ctl -c Release -- status --endpoints {nodeUrls}    Stop: Ctrl-C");

        // Nodes may be killed and restarted by hand to watch failover; the cluster runs until Ctrl-C.
        try
        {
            // A process that ended before the cluster was ready (a port in use, a bad setting) leaves nothing to watch:
            // the others are stopped, and dev fails.
            if (await ReportReadinessAsync(new Uri($"http://127.0.0.1:{basePort + 2000}/health"), gatewayPort, names, stopping.Token).ConfigureAwait(false))
            {
                await Task.Delay(Timeout.Infinite, stopping.Token).ConfigureAwait(false);
            }
            else
            {
                // Whatever its exit code (0 or a kill's): the cluster never came up.
                endedEarly.UnionWith(processes.Where(p => p.HasExited));
            }
        }
        catch (OperationCanceledException)
        {
        }

        Console.WriteLine("Stopping the nodes...");
        foreach (var process in processes.Where(p => !p.HasExited))
        {
            using var term = Process.Start("kill", $"-TERM {process.Id}");
            await term!.WaitForExitAsync().ConfigureAwait(false);
        }

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var killedHere = new HashSet<Process>();
        foreach (var process in processes)
        {
            try
            {
                await process.WaitForExitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                killedHere.Add(process);
                await process.WaitForExitAsync().ConfigureAwait(false);
            }
        }

        // 0 = stopped cleanly; 143 = SIGTERM before the host installed its handler; 137 = killed by hand meanwhile (one
        // that did not stop within the deadline and was killed here did not stop cleanly).
        var failed = processes.Where(p => killedHere.Contains(p) || endedEarly.Contains(p) || p.ExitCode is not (0 or 143 or 137)).ToList();
        foreach (var process in failed)
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{names[process]} (process {process.Id}) exited with code {process.ExitCode}"));
        }

        Console.WriteLine(failed.Count == 0 ? "All nodes stopped." : $"{failed.Count} process(es) exited with an error; see their output above.");
        return failed.Count == 0 ? 0 : 1;

        void Stop(PosixSignalContext context)
        {
            context.Cancel = true;
            stopping.Cancel();
        }

        // Four processes share one terminal: each line says whose it is.
        Process StartNamed(ProcessStartInfo info, string name)
        {
            info.RedirectStandardOutput = true;
            info.RedirectStandardError = true;
            var process = new Process { StartInfo = info };
            process.OutputDataReceived += (_, line) => Prefix(Console.Out, line.Data);
            process.ErrorDataReceived += (_, line) => Prefix(Console.Error, line.Data);
            if (!process.Start())
            {
                throw new InvalidOperationException($"could not start {name}");
            }

            names[process] = name;
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return process;

            void Prefix(TextWriter writer, string? line)
            {
                if (line is not null)
                {
                    writer.WriteLine($"{name} | {line}");
                }
            }
        }
    }

    private static readonly TimeSpan ReadinessPatience = TimeSpan.FromSeconds(120);

    /// <summary>
    /// Says when the gateway knows a leader: until then every command answers -TRYAGAIN, which a first-time user would
    /// take for a broken cluster. The gateway's /health names the leader it found.
    /// </summary>
    private static async Task<bool> ReportReadinessAsync(Uri gatewayHealth, int gatewayPort, IReadOnlyDictionary<Process, string> processes, CancellationToken cancellationToken)
    {
        Console.WriteLine("Waiting for the nodes to elect a leader...");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.Add(ReadinessPatience);
        while (DateTime.UtcNow < deadline)
        {
            if (processes.Keys.FirstOrDefault(p => p.HasExited) is { } exited)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{processes[exited]} (process {exited.Id}) exited with code {exited.ExitCode} before the cluster was ready; see its output above."));
                return false;
            }

            if (await GatewayLeaderAsync(http, gatewayHealth, cancellationToken).ConfigureAwait(false) is { } leader)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Ready: node {leader} leads. Try: redis-cli -p {gatewayPort} SET greeting hello"));
                return true;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken).ConfigureAwait(false);
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"No leader after {ReadinessPatience.TotalSeconds:0} s; the nodes keep trying (see their output above)."));
        return true;
    }

    private static async Task<ulong?> GatewayLeaderAsync(HttpClient http, Uri gatewayHealth, CancellationToken cancellationToken)
    {
        try
        {
            using var health = JsonDocument.Parse(await http.GetStringAsync(gatewayHealth, cancellationToken).ConfigureAwait(false));
            return health.RootElement.TryGetProperty("leaderId", out var leader) && leader.TryGetUInt64(out var id) && id != 0 ? id : null;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is HttpRequestException or TaskCanceledException or JsonException)
        {
            return null; // the gateway is not listening yet, or answered mid-start
        }
    }

    private static string FindProgram(string project, string dll)
    {
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}", StringComparison.Ordinal) ? "Release" : "Debug";
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "src", project, "bin", configuration, "net10.0", dll);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException($"cannot find {dll}; build the solution or pass --{project.ToLowerInvariant()}-dll PATH");
    }
}
