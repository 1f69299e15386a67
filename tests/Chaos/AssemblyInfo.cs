// The chaos tests start whole clusters and time faults against election timeouts: one at a time on a small machine.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
