import { expect } from 'chai';
import { soak } from '../helpers/soak.js';
import { guestImage } from '../helpers/guest.js';

describe('randomized soak (short; npm run soak for 500 operations)', function () {
  this.timeout(300_000);
  before(async () => {
    await guestImage();
  });

  it('80 random operations on two guest VMs keep QOM, netdevs, taps, bridge ports and records in agreement', async () => {
    const seed = Number(process.env.MQH_SEED ?? Date.now() % 1e9);
    const report = await soak(80, seed);
    expect(report.operations).to.equal(80);
    expect(report.counts['add ok'] ?? 0, `seed ${seed}`).to.be.greaterThan(5);
    expect(report.counts['add invalid refused'] ?? 0, `seed ${seed}`).to.be.greaterThan(2);
  });
});
