/** What a bench result was measured on: machine, versions, commit, load. */
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, totalmem } from 'node:os';

export interface Environment {
  cores: number;
  cpuModel: string;
  memoryGiB: number;
  node: string;
  natsServer: string;
  commit: string;
  /** 1, 5 and 15 minute load averages. */
  load: number[];
  date: string;
}

function natsServerVersion(): string {
  try {
    return execFileSync('nats-server', ['--version'], { encoding: 'utf8' }).trim().replace(/^nats-server:\s*/, '');
  } catch {
    return '?';
  }
}

function gitCommit(): string {
  try {
    const run = (args: string[]) => execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const sha = run(['rev-parse', '--short', 'HEAD']);
    const dirty = run(['status', '--porcelain', '--untracked-files=no', '--', 'src']) !== '';
    return `${sha}${dirty ? ' + uncommitted changes in src/' : ''}`;
  } catch {
    return '?';
  }
}

export function environment(): Environment {
  const cpu = cpus();
  return {
    cores: cpu.length,
    cpuModel: cpu[0]?.model ?? '?',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    natsServer: natsServerVersion(),
    commit: gitCommit(),
    load: loadavg().map((x) => Math.round(x * 100) / 100),
    date: new Date().toISOString(),
  };
}

export function describeEnvironment(e: Environment): string {
  return `${e.cores} cores (${e.cpuModel}), node ${e.node}, nats-server ${e.natsServer}, commit ${e.commit}, ${e.date}, load ${e.load.join(' ')}`;
}
