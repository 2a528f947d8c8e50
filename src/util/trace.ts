/**
 * A trace of what mq-hotplug sends and receives: every QMP message in and out, and every line
 * given to `ip` (and `tc`), every OVSDB message (`ovs`), on stderr with a timestamp. Off unless `--trace` or
 * MQ_HOTPLUG_TRACE=1; when off it costs one boolean test per message.
 *
 *   2026-11-27T10:01:02.345Z qmp > {"execute":"netdev_add","arguments":{...},"id":"mqh-4"}
 *   2026-11-27T10:01:02.351Z qmp < {"return":{},"id":"mqh-4"}
 *   2026-11-27T10:01:02.362Z ip  > link set dev vm1-nic0 address fe:54:00:12:34:56 master br0 up
 */

export type TraceChannel = 'qmp' | 'ip' | 'tc' | 'ovs';
/** '>' sent, '<' received, '!' the peer's error output. */
export type TraceDirection = '>' | '<' | '!';

let enabled = process.env.MQ_HOTPLUG_TRACE === '1';
let sink: (line: string) => void = (line) => process.stderr.write(line);

export function setTrace(on: boolean, write?: (line: string) => void): void {
  enabled = on;
  if (write) sink = write;
}

export function trace(channel: TraceChannel, direction: TraceDirection, text: string): void {
  if (!enabled) return;
  sink(`${new Date().toISOString()} ${channel.padEnd(3)} ${direction} ${text.trimEnd()}\n`);
}
