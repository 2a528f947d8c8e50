/**
 * Helpers over an event stream. Every consumer filters the shared stream for itself, so no one can
 * steal another's event. Waiting for one event is one line, and it must start before the command
 * that causes it:
 *
 *   const gone = nextEvent(qmp.events$, 'DEVICE_DELETED', forDevice('nic0'), 10_000);
 *   await qmp.execute('device_del', { id: 'nic0' });
 *   await gone;
 */
import { EmptyError, type Observable, TimeoutError, filter, firstValueFrom, timeout } from 'rxjs';
import { QmpDisconnectedError, QmpError } from './errors.js';
import type { QmpEvent } from './messages.js';

export type EventPredicate = (e: QmpEvent) => boolean;

/** Matches events about one device: DEVICE_DELETED's `data.device` (not its virtio-backend path). */
export const forDevice =
  (id: string): EventPredicate =>
  (e) =>
    e.data.device === id || e.data.id === id;

/** Only the events named (one name or several), optionally narrowed by a predicate. */
export function ofEvent(names: string | string[], predicate: EventPredicate = () => true) {
  const wanted = new Set(Array.isArray(names) ? names : [names]);
  return filter<QmpEvent>((e) => wanted.has(e.event) && predicate(e));
}

export class EventTimeoutError extends QmpError {
  override name = 'EventTimeoutError';
  constructor(
    readonly eventName: string,
    readonly timeoutMs: number,
  ) {
    super(`no ${eventName} within ${timeoutMs} ms`);
  }
}

/**
 * The next matching event. Subscribes at once (call it before the command that causes the event);
 * rejects with EventTimeoutError, or QmpDisconnectedError when the stream ends first.
 */
export function nextEvent(
  events$: Observable<QmpEvent>,
  names: string | string[],
  predicate?: EventPredicate,
  timeoutMs?: number,
): Promise<QmpEvent> {
  const label = Array.isArray(names) ? names.join('|') : names;
  let source = events$.pipe(ofEvent(names, predicate));
  if (timeoutMs !== undefined) source = source.pipe(timeout({ first: timeoutMs }));
  const waiting = firstValueFrom(source).catch((e: unknown) => {
    if (e instanceof TimeoutError) throw new EventTimeoutError(label, timeoutMs!);
    if (e instanceof EmptyError) throw new QmpDisconnectedError('the event stream', undefined, `ended before ${label}`);
    throw e;
  });
  // The caller may fail before awaiting this; never let that become an unhandled rejection.
  waiting.catch(() => {});
  return waiting;
}
