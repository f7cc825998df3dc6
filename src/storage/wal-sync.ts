/**
 * Group commit for the whole node, off the JS thread. The RocksDB binding performs a `sync: true`
 * write synchronously on the JS thread, blocking the event loop for the whole fsync, once per
 * partition writer. Instead, partition appends are written without sync (RocksDB hands the WAL
 * record to the OS before the write returns: `manual_wal_flush` is off) and then call `sync()`,
 * which fdatasyncs the WAL files through libuv's thread pool. Calls made while one runs share the
 * next one, so one fsync covers every partition's appends since the previous one.
 *
 * The WAL files are the `*.log` files of the database directory (RocksDB's default `wal_dir`); a
 * new one (after a memtable switch) is synced together with the directory, as RocksDB does. The
 * directory is listed again only when `version()` changed: RocksDB's super version number, which a
 * memtable switch (the only thing that starts a new WAL) bumps inside the write that caused it.
 */
import { open, readdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

export interface WalSync {
  /** Resolves once every write that completed before the call is on stable storage. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Told when a sync starts, with how many `sync()` calls it covers (the group commit's size);
 * returns what to call when it ends (metrics time it).
 */
export type SyncObserver = (groupSize: number) => () => void;

export function createWalSync(dir: string, version: () => unknown, observe?: SyncObserver): WalSync {
  const files = new Map<string, FileHandle>();
  let running: Promise<void> | undefined;
  let queued: Promise<void> | undefined;
  /** Calls waiting for the queued sync. */
  let joined = 0;
  let closed = false;
  let names: string[] = [];
  let listedAt: unknown = Symbol('never');

  const syncOnce = async (): Promise<void> => {
    // Read before listing: a switch during the listing makes the next sync list again.
    const now = version();
    if (now !== listedAt) {
      names = (await readdir(dir)).filter((n) => n.endsWith('.log'));
      listedAt = now;
    }
    let created = false;
    for (const name of names) {
      if (files.has(name)) continue;
      files.set(name, await open(join(dir, name), 'r'));
      created = true;
    }
    for (const [name, handle] of files) {
      if (names.includes(name)) continue;
      files.delete(name);
      await handle.close();
    }
    await Promise.all([...files.values()].map((h) => h.datasync()));
    if (created) {
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    }
  };

  const start = (groupSize: number): Promise<void> => {
    const done = observe?.(groupSize);
    running = syncOnce().finally(() => {
      running = undefined;
      done?.();
    });
    return running;
  };

  return {
    sync() {
      if (closed) return Promise.resolve();
      // A sync already running may have started before the caller's write: join the next one.
      if (running === undefined) return start(1);
      joined++;
      const next = () => {
        queued = undefined;
        const group = joined;
        joined = 0;
        return start(group);
      };
      queued ??= running.then(next, next);
      return queued;
    },
    async close() {
      closed = true;
      await Promise.allSettled([running, queued]);
      await Promise.allSettled([...files.values()].map((h) => h.close()));
      files.clear();
    },
  };
}
