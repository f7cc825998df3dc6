/**
 * `tidemark consume --subscription ...`: argument checks that need no cluster (they fail before the
 * CLI connects). The runs against real nodes are in test/subscription-types.test.ts.
 */
import test, { type ExecutionContext } from 'ava';
import { runCli, type CliResult } from './helpers/cli.js';

// Nothing listens here: a check that wrongly let a command through would fail on connecting, not hang.
const NATS = 'nats://127.0.0.1:1';

function assertOneLineError(t: ExecutionContext, r: CliResult, what: string): void {
  t.not(r.code, 0, `${what}: non-zero exit`);
  t.is(r.signal, null, `${what}: exits, not killed by a signal`);
  t.is(r.stdout, '', `${what}: nothing on stdout`);
  t.regex(r.stderr, /^tidemark: [^\n]+\n$/, `${what}: exactly one line on stderr, got ${JSON.stringify(r.stderr)}`);
  t.false(r.stderr.includes('    at '), `${what}: no stack trace`);
}

test('consume --subscription: bad or conflicting flags are usage errors (exit 2, one line naming the flag)', async (t) => {
  const cases: { args: string[]; mentions: string }[] = [
    { args: ['consume', 'orders', '--type', 'shared'], mentions: '--subscription' },
    { args: ['consume', 'orders', '--initial-position', 'earliest'], mentions: '--subscription' },
    { args: ['consume', 'orders', '--subscription', 's', '--type', 'bogus'], mentions: '--type' },
    { args: ['consume', 'orders', '--subscription', 's', '--initial-position', 'middle'], mentions: '--initial-position' },
    { args: ['consume', 'orders', '--subscription', 's', '--from-beginning'], mentions: '--initial-position earliest' },
    { args: ['consume', 'orders', '--subscription', 's', '--partition', '1'], mentions: '--partition' },
    { args: ['consume', 'orders', '--subscription', 's', '--offset', '1'], mentions: '--offset' },
    { args: ['consume', 'orders', '--subscription', 's', '--max-messages', '0'], mentions: '--max-messages' },
    { args: ['consume', 'orders', '--subscription'], mentions: '--subscription' },
  ];
  const results = await Promise.all(cases.map((c) => runCli(c.args, { nats: NATS, timeoutMs: 10_000 })));
  cases.forEach((c, i) => {
    const r = results[i]!;
    const what = `tidemark ${c.args.join(' ')}`;
    assertOneLineError(t, r, what);
    t.is(r.code, 2, `${what}: exit 2; stderr: ${r.stderr}`);
    t.true(r.stderr.includes(c.mentions), `${what}: mentions ${c.mentions}; stderr: ${r.stderr}`);
  });
});

test('consume --subscription: every type spelling is accepted (it gets as far as connecting)', async (t) => {
  for (const type of ['exclusive', 'failover', 'shared', 'key-shared', 'Key_Shared']) {
    const r = await runCli(['consume', 'orders', '--subscription', 's', '--type', type, '--initial-position', 'earliest', '--exit-at-end', '--json'], { nats: NATS, timeoutMs: 10_000 });
    assertOneLineError(t, r, `--type ${type}`);
    t.is(r.code, 1, `--type ${type}: past the argument checks, fails on the unreachable NATS: ${r.stderr}`);
  }
});

test('consume --help lists the subscription flags', async (t) => {
  const r = await runCli(['consume', '--help']);
  t.is(r.code, 0);
  for (const flag of ['--subscription NAME', '--type', 'exclusive|failover|shared|key-shared', '--initial-position', 'earliest|latest', '--exit-at-end', '--max-messages N', '--json']) {
    t.true(r.stdout.includes(flag), `help mentions ${flag}`);
  }
});
