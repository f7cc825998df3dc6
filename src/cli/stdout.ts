/** Writes to stdout honouring backpressure, so a slow pipe slows the consumer instead of buffering. */
export async function writeOut(text: string | Uint8Array): Promise<void> {
  if (process.stdout.write(text)) return;
  await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
}
