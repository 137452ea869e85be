export const OTHER_LABEL = 'other';

/**
 * Keeps a label's values bounded: the first `limit` distinct values seen keep their own label for the
 * life of the process (a series never changes its meaning), every later one is folded into "other".
 * A limit of 0 folds everything. Memory is bounded by `limit`.
 */
export class BoundedLabel {
  private readonly admitted = new Set<string>();
  private readonly limit: number;

  constructor(limit: number) {
    this.limit = limit;
  }

  valueFor(value: string): string {
    if (this.admitted.has(value)) return value;
    // A real value named "other" would otherwise merge with the fold.
    if (value === OTHER_LABEL || this.admitted.size >= this.limit) return OTHER_LABEL;
    this.admitted.add(value);
    return value;
  }

  get size(): number {
    return this.admitted.size;
  }
}
