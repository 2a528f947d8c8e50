/**
 * Bounded TCP transfers between a test guest and a LAN host (a network namespace), over IPv6
 * link-local addresses: the namespace runs lan-peer.mjs, the guest runs nc through the NIC named.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import path from 'node:path';
import { ROOT, linkLocal } from './env.js';
import type { Guest } from './guest.js';

/** The namespace end of a LAN: the namespace and its interface. */
export interface LanEnd {
  ns: string;
  peer: string;
}

/** Runs one bounded transfer between the LAN host and the guest; Mbit/s as the LAN host measured it. */
export async function transfer(
  lan: LanEnd,
  guest: Guest,
  ifname: string,
  direction: 'from-guest' | 'to-guest',
  bytes: number,
): Promise<number> {
  const port = direction === 'from-guest' ? '5001' : '5002';
  const peer = execa(
    'ip',
    [
      ...['netns', 'exec', lan.ns, process.execPath, path.join(ROOT, 'test/helpers/lan-peer.mjs')],
      ...[direction === 'from-guest' ? 'recv' : 'send', port, String(bytes)],
    ],
    { timeout: 70_000, buffer: true },
  );
  await new Promise<void>((resolve) => peer.stderr!.once('data', () => resolve())); // listening
  const address = `${await linkLocal(lan.peer, lan.ns)}%${ifname}`;
  const command =
    direction === 'from-guest'
      ? `dd if=/dev/zero bs=1024 count=${bytes / 1024} 2>/dev/null | nc -w 10 ${address} ${port}`
      : `nc -w 10 ${address} ${port} > /dev/null`;
  const ran = await guest.run(command, 60_000);
  expect(ran.rc, `${command}: ${ran.output.join(' | ')}`).to.equal(0);
  const result = JSON.parse((await peer).stdout) as { bytes: number; ms: number };
  expect(result.bytes).to.equal(bytes);
  return (result.bytes * 8) / 1000 / result.ms; // bits per ms / 1000 = Mbit/s
}

/** Mbit/s both ways through each NIC: `{ 'label from guest': n, 'label to guest': n, ... }`, logged. */
export async function ratesBothWays(
  lan: LanEnd,
  guest: Guest,
  nics: [ifname: string, label: string][],
  bytes: number,
): Promise<Record<string, number>> {
  const rates: Record<string, number> = {};
  for (const [ifname, label] of nics) {
    rates[`${label} from guest`] = await transfer(lan, guest, ifname, 'from-guest', bytes);
    rates[`${label} to guest`] = await transfer(lan, guest, ifname, 'to-guest', bytes);
  }
  const rounded = Object.fromEntries(Object.entries(rates).map(([k, v]) => [k, Math.round(v * 10) / 10]));
  console.log(`      measured Mbit/s: ${JSON.stringify(rounded)}`);
  return rates;
}
