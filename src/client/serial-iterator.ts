/**
 * The async-iterator plumbing a reader and a consumer share: `next()` calls are served one at a
 * time, in order (a caller may call it again before the previous one settled), and `return()`
 * (a `break` out of `for await`) closes the iterator.
 */
export const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

export abstract class SerialIterator<R> implements AsyncIterableIterator<R, undefined> {
  private chain: Promise<unknown> = Promise.resolve();

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<R, undefined>> {
    const result = this.chain.then(() => this.pull());
    this.chain = result.catch(() => undefined);
    return result;
  }

  async return(): Promise<IteratorResult<R, undefined>> {
    await this.close();
    return DONE;
  }

  /** The next value, once the previous `next()` has settled. */
  protected abstract pull(): Promise<IteratorResult<R, undefined>>;

  abstract close(): Promise<void>;
}
