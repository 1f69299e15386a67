using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Dcache.Gateway.Resp;

public static class RespServiceCollectionExtensions
{
    /// <summary>
    /// Registers the Redis-protocol front end: <see cref="RespOptions"/> (validated at start), the shared
    /// <see cref="RespClientRegistry"/> and <see cref="RespConnectionHandler"/> as singletons. The host still provides
    /// an <see cref="Cluster.ICacheCluster"/> and maps a Kestrel endpoint with UseConnectionHandler&lt;RespConnectionHandler&gt;().
    /// </summary>
    public static IServiceCollection AddRespFrontEnd(this IServiceCollection services, Action<RespOptions>? configure = null)
    {
        var options = services.AddOptions<RespOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.Validate(static o =>
        {
            o.Validate();
            return true;
        }).ValidateOnStart();
        services.TryAddSingleton<RespClientRegistry>();
        services.TryAddSingleton<RespConnectionHandler>();
        return services;
    }
}
