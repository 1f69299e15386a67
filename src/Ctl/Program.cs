using Dcache.Ctl;

return await CommandLine.RunAsync(args).ConfigureAwait(false);
