/** The shapes of QMP messages (docs/interop/qmp-spec.rst) and of the events this program sees. */

export interface QmpGreeting {
  QMP: {
    version: { qemu: { major: number; minor: number; micro: number }; package: string };
    capabilities: string[];
  };
}

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

/** An event as QEMU sends it (`data` is `{}` when QEMU sent none). */
export interface QmpEvent<D = Record<string, unknown>> {
  event: string;
  data: D;
  timestamp: QmpTimestamp;
}

export type QmpId = string | number;

export interface QmpReturn {
  return: unknown;
  id?: QmpId;
}

export interface QmpErrorReply {
  error: { class: string; desc: string };
  id?: QmpId;
}

export type QmpMessage = QmpGreeting | QmpReturn | QmpErrorReply | QmpEvent;

export function isGreeting(m: object): m is QmpGreeting {
  return 'QMP' in m;
}
export function isReturn(m: object): m is QmpReturn {
  return 'return' in m;
}
export function isErrorReply(m: object): m is QmpErrorReply {
  return 'error' in m;
}
export function isEvent(m: object): m is QmpEvent {
  return 'event' in m;
}

/** The current time as QEMU stamps events. */
export function nowTimestamp(): QmpTimestamp {
  const us = Date.now() * 1000;
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}
