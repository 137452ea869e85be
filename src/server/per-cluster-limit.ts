/**
 * Counts what each cluster holds (requests in flight, upgraded sessions) against one limit. Entries go
 * away at zero, so the map is bounded by what is open, never by how many clusters were ever seen.
 */
export class PerClusterLimit {
  private readonly counts = new Map<string, number>();
  readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Takes a slot, or returns false when the cluster is at the limit. */
  tryAcquire(cluster: string): boolean {
    const n = this.counts.get(cluster) ?? 0;
    if (n >= this.limit) return false;
    this.counts.set(cluster, n + 1);
    return true;
  }

  release(cluster: string): void {
    const left = (this.counts.get(cluster) ?? 1) - 1;
    if (left === 0) this.counts.delete(cluster);
    else this.counts.set(cluster, left);
  }
}
