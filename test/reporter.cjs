// mocha's spec reporter, then one plain closing line "N passed, N failed[, N skipped]" that CI reads.
const { Spec } = require('mocha').reporters;

class SpecWithSummary extends Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once('end', () => {
      const s = runner.stats;
      console.log(`${s.passes} passed, ${s.failures} failed` + (s.pending ? `, ${s.pending} skipped` : ''));
    });
  }
}
module.exports = SpecWithSummary;
