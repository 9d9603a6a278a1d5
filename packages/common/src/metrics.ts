// What the daemon's and the controller's Prometheus registries share (prom-client is
// theirs; this file only sees a registry's shape, so common stays free of it).

/** The part of a prom-client Registry used here. */
export interface MetricRegistryLike {
  getMetricsAsArray(): unknown[];
  removeSingleMetric(name: string): void;
}

/**
 * Removes the metrics whose names break the rule that only counters end in `_total`:
 * prom-client's default nodejs_active_{handles,requests,resources}_total are gauges
 * (sums of the per-type nodejs_active_* gauges that stay), and `promtool check metrics`
 * rejects them. Returns the names removed.
 */
export function removeMisnamedTotals(registry: MetricRegistryLike): string[] {
  const removed: string[] = [];
  for (const m of registry.getMetricsAsArray()) {
    const { name, type } = m as { name: string; type: unknown };
    if (name.endsWith('_total') && String(type) !== 'counter') {
      registry.removeSingleMetric(name);
      removed.push(name);
    }
  }
  return removed;
}
