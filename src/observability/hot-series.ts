/**
 * Counts for the metrics every request updates, kept in flat arrays indexed by small label indexes.
 * prom-client hashes the label object on every inc() and observe() (its labels() children do too): at
 * 1 KiB @64 that was 3 % of the CPU, about 10 us per request (bench/README.md, finding 12). Here a
 * request costs a few array writes, and the registry reads the arrays at scrape time, so the exposition
 * is the one prom-client writes.
 */

/** One metric value as prom-client's registry formats it. */
interface SeriesValue {
  value: number;
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  metricName?: string;
}

/** What prom-client's Registry reads from a registered metric. */
interface RegistryMetric {
  name: string;
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: SeriesValue[] }>;
  reset(): void;
}

/** A label and the fixed values it may take. */
export interface LabelSpace {
  name: string;
  values: readonly string[];
}

/** Every combination of the label values, in index order: index = ((i0 * n1) + i1) * n2 + i2 ... */
function combinations(labels: readonly LabelSpace[]): Record<string, string>[] {
  let out: Record<string, string>[] = [{}];
  for (const l of labels) out = out.flatMap((prefix) => l.values.map((v) => ({ ...prefix, [l.name]: v })));
  return out;
}

/**
 * A counter over a fixed grid of label values. `add(index)` takes the grid index from the caller, which
 * computes it from indexes it already has (see Metrics). Series appear once counted, as with prom-client.
 */
export class GridCounter implements RegistryMetric {
  readonly name: string;
  private readonly help: string;
  private readonly counts: Float64Array;
  private readonly labelSets: Record<string, string>[];

  constructor(name: string, help: string, labels: readonly LabelSpace[]) {
    this.name = name;
    this.help = help;
    this.labelSets = combinations(labels);
    this.counts = new Float64Array(this.labelSets.length);
  }

  add(index: number, n = 1): void {
    this.counts[index]! += n;
  }

  async get(): ReturnType<RegistryMetric['get']> {
    const values: SeriesValue[] = [];
    this.counts.forEach((value, i) => {
      if (value > 0) values.push({ value, labels: this.labelSets[i]! });
    });
    return { name: this.name, help: this.help, type: 'counter', aggregator: 'sum', values };
  }

  reset(): void {
    this.counts.fill(0);
  }
}

/** A gauge per value of one label; every series is always exposed (0 when nothing is counted). */
export class GridGauge implements RegistryMetric {
  readonly name: string;
  private readonly help: string;
  private readonly label: LabelSpace;
  private readonly levels: Float64Array;

  constructor(name: string, help: string, label: LabelSpace) {
    this.name = name;
    this.help = help;
    this.label = label;
    this.levels = new Float64Array(label.values.length);
  }

  add(index: number, n: number): void {
    this.levels[index]! += n;
  }

  async get(): ReturnType<RegistryMetric['get']> {
    const values = this.label.values.map((v, i) => ({ value: this.levels[i]!, labels: { [this.label.name]: v } }));
    return { name: this.name, help: this.help, type: 'gauge', aggregator: 'sum', values };
  }

  reset(): void {
    this.levels.fill(0);
  }
}

/** A histogram per value of one label, with fixed upper bounds. */
export class GridHistogram implements RegistryMetric {
  /** Per series: one count per bound and one for +Inf (not cumulative), then the sum and the count. */
  private readonly cells: Float64Array;
  private readonly width: number;
  private readonly seriesLabels: Record<string, string>[];
  readonly name: string;
  private readonly help: string;
  private readonly bounds: readonly number[];

  constructor(name: string, help: string, bounds: readonly number[], label: LabelSpace) {
    this.name = name;
    this.help = help;
    this.bounds = bounds;
    this.seriesLabels = label.values.map((v) => ({ [label.name]: v }));
    this.width = bounds.length + 3;
    this.cells = new Float64Array(this.seriesLabels.length * this.width);
  }

  observe(series: number, value: number): void {
    const base = series * this.width;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.cells[base + i]!++;
    this.cells[base + bounds.length + 1]! += value;
    this.cells[base + bounds.length + 2]!++;
  }

  async get(): ReturnType<RegistryMetric['get']> {
    const values: SeriesValue[] = [];
    const n = this.bounds.length;
    this.seriesLabels.forEach((shared, s) => {
      const base = s * this.width;
      const count = this.cells[base + n + 2]!;
      // As with prom-client, a series exists once observed.
      if (count === 0) return;
      let cumulative = 0;
      for (let i = 0; i < n; i++) {
        cumulative += this.cells[base + i]!;
        values.push({ value: cumulative, labels: { le: this.bounds[i]! }, sharedLabels: shared, metricName: `${this.name}_bucket` });
      }
      values.push({ value: count, labels: { le: '+Inf' }, sharedLabels: shared, metricName: `${this.name}_bucket` });
      values.push({ value: this.cells[base + n + 1]!, labels: {}, sharedLabels: shared, metricName: `${this.name}_sum` });
      values.push({ value: count, labels: {}, sharedLabels: shared, metricName: `${this.name}_count` });
    });
    return { name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values };
  }

  reset(): void {
    this.cells.fill(0);
  }
}
