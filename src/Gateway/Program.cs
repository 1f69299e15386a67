// A placeholder host so the project builds; the gateway host (RESP listener, cluster client) replaces it.
var builder = WebApplication.CreateBuilder(args);
var app = builder.Build();
app.Run();
