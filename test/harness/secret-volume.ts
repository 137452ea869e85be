import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';

/**
 * A directory laid out and updated like a mounted Kubernetes Secret: the files live in a timestamped
 * folder, `..data` links to it, and each visible name links through `..data`. An update writes a new
 * folder and swaps `..data` with one rename, as the kubelet's atomic writer does.
 */
export class SecretVolume {
  readonly dir: string;
  private generation = 0;
  private current: string | undefined;

  constructor(dir: string, files: Record<string, Buffer | string>) {
    this.dir = dir;
    mkdirSync(dir, { recursive: true });
    this.write(files);
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  write(files: Record<string, Buffer | string>): void {
    const folder = `..${Date.now()}_${++this.generation}`;
    mkdirSync(path.join(this.dir, folder));
    for (const [name, content] of Object.entries(files)) writeFileSync(path.join(this.dir, folder, name), content);
    const tmp = path.join(this.dir, '..data_tmp');
    symlinkSync(folder, tmp);
    renameSync(tmp, path.join(this.dir, '..data'));
    for (const name of Object.keys(files)) {
      if (!existsSync(this.file(name))) symlinkSync(path.join('..data', name), this.file(name));
    }
    if (this.current !== undefined) rmSync(path.join(this.dir, this.current), { recursive: true, force: true });
    this.current = folder;
  }
}
