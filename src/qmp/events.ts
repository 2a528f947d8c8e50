/**
 * Helpers over an event stream. Every consumer filters the shared stream for itself, so no one can
 * steal another's event. Waiting for one event is one line, and it must start before the command
 * that causes it:
 *
 *   const gone = nextEvent(qmp.events$, 'DEVICE_DELETED', forDevice('nic0'), 10_000);
 *   await qmp.execute('device_del', { id: 'nic0' });
 *   await gone;
 *
 * They work on any stream of `{event, data}`: QEMU's own, or a layer's that adds events of its own.
 */
import {
  EmptyError,
  type Observable,
  type OperatorFunction,
  TimeoutError,
  filter,
  firstValueFrom,
  timeout,
} from 'rxjs';
import { QmpDisconnectedError, QmpError } from './errors.js';

/** The least an event has: a name and a data object. */
export interface EventLike {
  event: string;
  data: object;
}

export type EventPredicate<E extends EventLike = EventLike> = (e: E) => boolean;

/** Matches events about one device: DEVICE_DELETED's `data.device` (not its virtio-backend path). */
export const forDevice =
  (id: string): EventPredicate =>
  (e) => {
    const data = e.data as { device?: unknown; id?: unknown };
    return data.device === id || data.id === id;
  };

/**
 * The members of an event union that may be named K: those whose `event` is the literal K, and
 * those typed with a plain `string` name (QEMU's events), which any name may be.
 */
export type Named<E extends EventLike, K extends string> = E extends { event: infer N }
  ? string extends N
    ? E
    : N extends K
      ? E
      : never
  : never;

/** Only the events named (one name or several), optionally narrowed by a predicate. */
export function ofEvent<E extends EventLike, K extends string = string>(
  names: K | K[],
  predicate: EventPredicate<Named<E, K>> = () => true,
): OperatorFunction<E, Named<E, K>> {
  const wanted = new Set<string>(Array.isArray(names) ? names : [names]);
  return filter((e: E): e is Named<E, K> => wanted.has(e.event) && predicate(e as Named<E, K>));
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
export function nextEvent<E extends EventLike, K extends string = string>(
  events$: Observable<E>,
  names: K | K[],
  predicate?: EventPredicate<Named<E, K>>,
  timeoutMs?: number,
): Promise<Named<E, K>> {
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
