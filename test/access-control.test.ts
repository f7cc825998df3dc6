/**
 * Access control through NATS with the documented two-account configuration (docs/security.md):
 * the nodes' account exports the client-facing subjects as services, the clients' account imports
 * them and holds alice and bob (the suite: test/helpers/access-control-suite.ts).
 */
import test from 'ava';
import { accessControlSuite } from './helpers/access-control-suite.js';

accessControlSuite(test, {
  block: 0,
  commands: [
    '--node',
    '--exports',
    '--user alice --produce orders --consume payments:billing',
    '--user bob --produce payments --read orders --admin orders --admin payments',
    '--imports NODES',
  ],
});
