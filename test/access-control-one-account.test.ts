/**
 * Access control through NATS with the documented one-account variant (docs/security.md): the node
 * user and the client users side by side, kept apart by their allow lists alone (the suite:
 * test/helpers/access-control-suite.ts).
 */
import test from 'ava';
import { accessControlSuite } from './helpers/access-control-suite.js';

accessControlSuite(test, {
  block: 1,
  commands: ['--node', '--user alice --produce orders --consume payments:billing', '--user bob --produce payments --read orders --admin orders --admin payments'],
});
