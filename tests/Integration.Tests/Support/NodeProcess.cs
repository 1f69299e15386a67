namespace Dcache.Integration.Tests.Support;

/// <summary>One real node process on 127.0.0.1.</summary>
internal sealed class NodeProcess(ulong id, int grpcPort, int httpPort, string dataDirectory, Func<ulong, IReadOnlyList<string>> arguments) : IAsyncDisposable
{
    private readonly ChildProcess _process = new($"node {id}", RepoPaths.NodeDll);

    public ulong Id { get; } = id;

    public int GrpcPort { get; } = grpcPort;

    public int HttpPort { get; } = httpPort;

    public string GrpcUrl => $"http://127.0.0.1:{GrpcPort}";

    public string DataDirectory { get; } = dataDirectory;

    public bool IsRunning => _process.IsRunning;

    public int? ProcessId => _process.ProcessId;

    public int? ExitCode => _process.ExitCode;

    public void Start(params string[] extraArguments) => _process.Start(arguments(Id).Concat(extraArguments));

    public void Kill() => _process.Kill();

    public void Pause() => _process.Pause();

    public void Resume() => _process.Resume();

    public Task StopAsync(TimeSpan timeout) => _process.StopAsync(timeout);

    public string RecentOutput(int lines = 80) => _process.RecentOutput(lines);

    public ValueTask DisposeAsync() => _process.DisposeAsync();
}
