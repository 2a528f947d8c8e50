/** Waiting, without ever holding a process open: every timer made here is cleared. */

/**
 * Milliseconds on a monotonic clock, for durations. Not `performance.now()`: in Node 20 the first
 * touch of the `performance` global loads perf_hooks, about 2 ms of every CLI start.
 */
export const monotonicMs = () => Number(process.hrtime.bigint()) / 1e6;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The promise's value, or `fallback` after `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<T>((r) => (timer = setTimeout(() => r(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Calls `check` every `intervalMs` until it returns a truthy value, which is returned; undefined
 * when `timeoutMs` passes first. `check` runs at least once.
 */
export async function pollUntil<T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs: number,
  intervalMs = 20,
): Promise<T | undefined> {
  const deadline = monotonicMs() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (monotonicMs() >= deadline) return undefined;
    await sleep(Math.min(intervalMs, Math.max(0, deadline - monotonicMs())));
  }
}

/** A duration from the environment (ms), or the fallback when unset or not a positive number. */
export function envMs(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}
