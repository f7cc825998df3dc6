/**
 * The SDK from another project: `npm pack` makes a tarball that a fresh project installs, type-checks
 * a program against (the package's own .d.ts, strict) and runs against a real node and a real
 * nats-server; its `tidemark` bin works too. Uses the npm cache the repository's own install filled
 * (--prefer-offline), so it needs the registry only for what that cache lacks.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { killAllCliProcesses, startNodeProcess, type CliProcess } from './helpers/cli.js';
import { startNatsServer, type NatsServer } from './helpers/nats-server.js';
import { tempDir } from './helpers/node.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TSC = join(createRequire(import.meta.url).resolve('typescript/package.json'), '..', 'bin', 'tsc');
/** Bound on each npm or tsc step, ms (an install from a warm cache takes seconds). */
const STEP_MS = 180_000;

const PROGRAM = `import { codecs, Tidemark, TidemarkError, type RecordMetadata } from 'tidemark';

interface Order { id: string; amount: number }

const client = await Tidemark.connect({ servers: process.env['TIDEMARK_NATS']! });
try {
  await client.admin().createTopic({ name: 'packaged', partitions: 2 });
  const codec = codecs.json<Order>();
  const producer = client.producer<Order>({ topic: 'packaged', codec, acks: 'all' });
  // @ts-expect-error the package's types are strict: acks is 0, 1 or 'all'
  void (() => client.producer<Order>({ topic: 'packaged', codec, acks: 2 }));
  const meta: RecordMetadata = await producer.send({ key: 'o-1', value: { id: 'o-1', amount: 42 } });
  await producer.close();
  const reader = client.reader<Order>({ topic: 'packaged', partition: meta.partition, from: 'earliest', codec });
  const record = await reader.next();
  await reader.close();
  const amount: number | undefined = record.done ? undefined : record.value.value?.amount;
  console.log(\`read \${amount} at \${meta.partition}/\${meta.offset}\`);
  try {
    await client.admin().describeTopic('nosuch');
  } catch (error) {
    if (error instanceof TidemarkError) console.log(\`describe nosuch: \${error.code}\`);
  }
} finally {
  await client.close();
}
`;

const TSCONFIG = {
  compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, outDir: 'out', types: ['node'], skipLibCheck: false },
  include: ['main.ts'],
};

let nats: NatsServer;
let dataDir: string;
let project: string;
let node: CliProcess;

test.before(async () => {
  nats = await startNatsServer();
  dataDir = await tempDir('tm-pkg-node-');
  project = await tempDir('tm-pkg-');
  node = await startNodeProcess({ nats: nats.url, dataDir });
});

test.after.always(async () => {
  await node?.kill('SIGTERM').catch(() => {});
  await killAllCliProcesses();
  await nats?.stop();
  for (const dir of [dataDir, project]) if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

test('npm pack gives a package another project installs, type-checks against and runs, bin included', async (t) => {
  t.timeout(4 * STEP_MS);
  // dist/ is built by `npm test` before ava runs; --ignore-scripts skips building it again.
  await run('npm', ['pack', '--ignore-scripts', '--pack-destination', project], { cwd: ROOT, timeout: STEP_MS });
  const tarball = (await readdir(project)).find((f) => f.endsWith('.tgz'));
  t.truthy(tarball, 'npm pack wrote a tarball');
  const listing = (await run('tar', ['tzf', join(project, tarball!)])).stdout.split('\n');
  t.true(listing.includes('package/dist/src/index.d.ts') && listing.includes('package/bin/tidemark.js'), 'types and bin are packed');
  t.deepEqual(listing.filter((f) => /^package\/(dist\/(test|bench|tools)|src|test)\//.test(f)), [], 'sources, tests and benches are not');
  await writeFile(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module', dependencies: { tidemark: `file:./${tarball}` } }));
  const install = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: project, timeout: STEP_MS });
  t.notRegex(install.stderr, /EBADENGINE/, 'no engine warnings');
  // Node's own types come from this repository's install (the consumer would have its own).
  await mkdir(join(project, 'node_modules', '@types'), { recursive: true });
  await run('ln', ['-s', join(ROOT, 'node_modules', '@types', 'node'), join(project, 'node_modules', '@types', 'node')]);
  await writeFile(join(project, 'main.ts'), PROGRAM);
  await writeFile(join(project, 'tsconfig.json'), JSON.stringify(TSCONFIG));
  const compiled = await run(process.execPath, [TSC, '-p', '.'], { cwd: project, timeout: STEP_MS }).catch((error: { stdout?: string; message: string }) => {
    throw new Error(`the program does not type-check against the package: ${error.stdout ?? error.message}`);
  });
  t.is(compiled.stdout.trim(), '', 'tsc reports nothing');

  const env = { ...process.env, TIDEMARK_NATS: nats.url };
  const out = await run(process.execPath, [join(project, 'out', 'main.js')], { cwd: project, env, timeout: 60_000 });
  t.regex(out.stdout, /^read 42 at [01]\/0\ndescribe nosuch: UNKNOWN_TOPIC\n$/);

  const bin = await run(join(project, 'node_modules', '.bin', 'tidemark'), ['topic', 'list'], { cwd: project, env, timeout: 60_000 });
  t.is(bin.stdout, 'packaged\n');
});
