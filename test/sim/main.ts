/**
 * The simulator's command line.
 *
 *   npm run sim -- --seed S [--steps N] [--nodes K] [--fault-rate F] [--power-loss on|off] [--bug B] [--verbose]
 *       replays one seed exactly; on failure prints the seed, the violations and the last events.
 *       --bug runs one of the injected bugs (injected-bugs.ts) instead of the product's machine.
 *   npm run sim:swarm -- --seconds T [--steps N]
 *       runs random seeds (each picks its own cluster size and fault rates; the run length is
 *       drawn too unless --steps is given) for T seconds of wall time and prints a summary: seeds
 *       run, simulated hours, failures with their seeds and the command that replays each.
 *
 * Exit status: 0 when every run passed, 1 when one failed, 2 on bad arguments.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { deriveConfig, describeConfig, type ConfigOverrides } from './config.js';
import { INJECTED_BUGS, type InjectedBug } from './injected-bugs.js';
import { runSimulation, type SimResult } from './run.js';

const SEED_MAX = 2 ** 31 - 1;

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run sim -- --seed S [--steps N] [--nodes K] [--fault-rate F] [--power-loss on|off] [--bug B] [--verbose]\n       npm run sim:swarm -- --seconds T [--steps N]\n`);
  process.exit(2);
}

function int(name: string, text: string | undefined, min: number, max: number): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer within ${min}..${max}`);
  return n;
}

function replayCommand(r: SimResult, overrides: ConfigOverrides): string {
  const extra = [
    overrides.nodes === undefined ? '' : ` --nodes ${overrides.nodes}`,
    overrides.faultRate === undefined ? '' : ` --fault-rate ${overrides.faultRate}`,
    overrides.powerLoss === undefined ? '' : ` --power-loss ${overrides.powerLoss ? 'on' : 'off'}`,
  ].join('');
  return `npm run sim -- --seed ${r.config.seed} --steps ${r.config.steps}${extra}`;
}

function printFailure(r: SimResult, overrides: ConfigOverrides): void {
  const out = [
    `FAILED seed ${r.config.seed} after ${r.stepsRun} steps, ${r.simMs} simulated ms`,
    `config: ${describeConfig(r.config)}`,
    'violations:',
    ...r.violations.map((v) => `  ${v}`),
    `last ${r.traceTail.length} events:`,
    ...r.traceTail.map((l) => `  ${l}`),
    `replay: ${replayCommand(r, overrides)}`,
  ];
  process.stdout.write(`${out.join('\n')}\n`);
}

function summary(r: SimResult): string {
  const s = r.stats;
  return (
    `seed ${r.config.seed}: ${r.ok ? 'ok' : 'FAILED'}; ${r.stepsRun} steps, ${(r.simMs / 1000).toFixed(1)} simulated s in ${(r.wallMs / 1000).toFixed(1)} s; ` +
    `converged in ${r.convergedMs ?? '-'} ms; ${s['load.sent']} sent, ${s['load.acked']} acked, ${s['reader.read']} read; ${s['sub.subscriptions']} subscriptions (${s['sub.consumers']} consumers, ${s['sub.crashed']} crashed): ${s['sub.received']} received, ${s['sub.acked']} acked, ${s['sub.nacked']} nacked; ` +
    `${s['fault.crash']} crashes, ${s['fault.powerloss']} power losses, ${s['fault.pause']} pauses, ${(s['fault.isolate'] ?? 0) + (s['fault.cut-some'] ?? 0) + (s['fault.cut-oneway'] ?? 0)} cuts; ` +
    `${s['terms']} terms; ${s['ledger.excused']} acks excused by power loss, ${s['ledger.acks1Lost']} acks=1 lost, ${s['ledger.truncatedRecords']} records truncated; digest ${r.digest}`
  );
}

async function replay(seed: number, overrides: ConfigOverrides, verbose: boolean, bug: InjectedBug | undefined): Promise<number> {
  const config = { ...deriveConfig(seed, overrides), ...(bug === undefined ? {} : { machines: INJECTED_BUGS[bug] }) };
  process.stdout.write(`seed ${seed}: ${describeConfig(config)}\n`);
  const r = await runSimulation(config);
  if (!r.ok) {
    printFailure(r, overrides);
    return 1;
  }
  process.stdout.write(`${summary(r)}\n`);
  if (verbose) process.stdout.write(`${r.traceTail.map((l) => `  ${l}`).join('\n')}\n${JSON.stringify(r.stats)}\n`);
  return 0;
}

/** Run lengths the swarm picks from when --steps is not given. */
const SWARM_STEPS = [300, 300, 600, 1000, 2000] as const;

async function swarm(seconds: number, fixedSteps: number | undefined): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  const failures: SimResult[] = [];
  let runs = 0;
  let simMs = 0;
  let sizes = new Map<number, number>();
  while (performance.now() < deadline) {
    const seed = randomInt(1, SEED_MAX);
    const steps = fixedSteps ?? SWARM_STEPS[randomInt(0, SWARM_STEPS.length)]!;
    const r = await runSimulation(deriveConfig(seed, { steps }));
    runs++;
    simMs += r.simMs;
    sizes = sizes.set(r.config.nodes, (sizes.get(r.config.nodes) ?? 0) + 1);
    process.stdout.write(`${summary(r)}\n`);
    if (!r.ok) {
      failures.push(r);
      printFailure(r, {});
    }
  }
  const bySize = [...sizes].sort(([a], [b]) => a - b).map(([n, c]) => `${c}×${n} nodes`).join(', ');
  process.stdout.write(
    `\nswarm: ${runs} seeds (${bySize}), ${(simMs / 3_600_000).toFixed(2)} simulated hours in ${seconds} s of wall time; ` +
      `${failures.length} failure(s)${failures.length > 0 ? `: seeds ${failures.map((f) => f.config.seed).join(', ')}` : ''}\n`,
  );
  return failures.length > 0 ? 1 : 0;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      steps: { type: 'string' },
      nodes: { type: 'string' },
      'fault-rate': { type: 'string' },
      'power-loss': { type: 'string' },
      swarm: { type: 'boolean', default: false },
      seconds: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      bug: { type: 'string' },
    },
    strict: true,
  });
  const steps = int('steps', values.steps, 1, 1_000_000);
  if (values.swarm) return swarm(int('seconds', values.seconds, 1, 7 * 86_400) ?? 60, steps);
  const seed = int('seed', values.seed, 0, SEED_MAX);
  if (seed === undefined) usage('--seed is required (or --swarm)');
  const faultRate = values['fault-rate'] === undefined ? undefined : Number(values['fault-rate']);
  if (faultRate !== undefined && !(faultRate >= 0 && faultRate <= 10)) usage('--fault-rate must be within 0..10');
  const powerLoss = values['power-loss'] === undefined ? undefined : values['power-loss'] === 'on';
  const overrides: ConfigOverrides = {
    ...(steps === undefined ? {} : { steps }),
    ...(values.nodes === undefined ? {} : { nodes: int('nodes', values.nodes, 1, 7)! }),
    ...(faultRate === undefined ? {} : { faultRate }),
    ...(powerLoss === undefined ? {} : { powerLoss }),
  };
  const bug = values.bug;
  if (bug !== undefined && !Object.hasOwn(INJECTED_BUGS, bug)) usage(`--bug must be one of ${Object.keys(INJECTED_BUGS).join(', ')}`);
  return replay(seed, overrides, values.verbose, bug as InjectedBug | undefined);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
