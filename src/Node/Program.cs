// A placeholder host so the project builds and runs; the real node host (gRPC services, Raft driver loop) replaces it.
var builder = WebApplication.CreateBuilder(args);
var app = builder.Build();
app.Run();
