// The race: two patients (through two Buktor instances on one database)
// choose the same slot at the same moment. Both clicks are made and both hold
// requests are on their way before either reaches a server (the test parks
// them and lets them go together), so neither screen can know of the other.
// Exactly one gets the slot and books it; the other is told (SLOT_TAKEN or
// HOLD_EXPIRED) and shown fresh slots without it. The server has exactly one
// appointment at that time.
import { assert, bookedOn, expectVisible, sameInstant, show, until } from './lib.mjs';
import { choose, chooseDay, confirmBooking, events, fillPatient, openWidget, showsSlot, slotButton, untilApiOffers } from './widget.mjs';

/** Parks the page's POST …/holds requests until released. */
async function parkHolds(page) {
  const parked = [];
  await page.route('**/widget/v1/*/holds', (route) => {
    if (route.request().method() === 'POST') parked.push(route);
    else route.continue();
  });
  return parked;
}

async function race(t) {
  const site = t.config.sites.race;
  const service = site.services.checkup.id;
  const practitioner = site.practitioner.id;
  const s = site.at['13:00'];
  const attrs = { service, practitioner };
  const patients = [
    { label: 'A', server: site.servers[0], patient: { name: 'Anna Race', email: 'anna.race@example.org' } },
    { label: 'B', server: site.servers[site.servers.length - 1], patient: { name: 'Bram Race', email: 'bram.race@example.org' } },
  ];
  for (const p of patients) {
    Object.assign(p, await openWidget(t, p.label, site, attrs, { server: p.server }));
    await chooseDay(p.page, site.day);
    p.slot = await slotButton(p.page, s, `the 13:00 slot for ${p.label}`);
    p.parked = await parkHolds(p.page);
  }

  // Both choose 13:00; both hold requests wait at the door, then go together.
  for (const p of patients) await p.slot.click();
  await until('both hold requests to be on their way', () => patients.every((p) => p.parked.length === 1));
  await Promise.all(patients.map((p) => p.parked[0].continue()));
  for (const p of patients) await p.page.unroute('**/widget/v1/*/holds');

  // Each learns its outcome: a hold, or an error.
  const outcome = async (p) => {
    const e = await events(p.page);
    if (e.some((x) => x.type === 'buktor:slot-held')) return 'held';
    if (e.some((x) => x.type === 'buktor:error')) return 'refused';
    return null;
  };
  for (const p of patients) p.outcome = await until(`${p.label} to learn the outcome`, () => outcome(p));
  const winners = patients.filter((p) => p.outcome === 'held');
  const losers = patients.filter((p) => p.outcome === 'refused');
  assert.equal(winners.length, 1, `exactly one holds the slot: ${show(patients.map((p) => [p.label, p.outcome]))}`);
  assert.equal(losers.length, 1, 'exactly one is refused');
  const [winner] = winners;
  const [loser] = losers;
  t.log(`${winner.label} won the race, ${loser.label} lost it`);

  // The loser is told, with the contract's code, and sees fresh slots without 13:00.
  const error = loser.page.locator('buktor-booking [data-testid=error]');
  await expectVisible(error, 'the loser\'s error');
  assert.equal(await error.getAttribute('role'), 'alert');
  const code = await error.getAttribute('data-code');
  assert.ok(['SLOT_TAKEN', 'HOLD_EXPIRED'].includes(code), `the loser's error code: ${code}`);
  const errorEvent = (await events(loser.page)).find((e) => e.type === 'buktor:error');
  assert.equal(errorEvent.detail.code, code, 'buktor:error carries the same code');
  await until('the loser to see fresh slots without 13:00', async () =>
    !(await showsSlot(loser.page, s)) && (await showsSlot(loser.page, site.at['13:15'])));
  await t.shot(loser.page, 'race-loser');

  // The winner books.
  await fillPatient(winner.page, winner.patient);
  const booked = await confirmBooking(winner.page);
  assert.ok(sameInstant(booked.start, s));
  await t.shot(winner.page, 'race-winner');

  // The loser cannot get it now either: 13:00 is gone for good.
  await untilApiOffers(site, service, practitioner, site.day, s, false);
  await choose(loser.page, { practitioner: '' });
  await choose(loser.page, { practitioner });
  await chooseDay(loser.page, site.day);
  await slotButton(loser.page, site.at['13:15'], 'the loser\'s slots after loading afresh');
  assert.ok(!(await showsSlot(loser.page, s)), 'the booked 13:00 is not offered to the loser');

  // Exactly one appointment at 13:00, and it is the winner's.
  const at = (await until('the agenda to show the booking', async () => {
    const list = await bookedOn(site, practitioner, site.day);
    return list.length ? list : null;
  })).filter((b) => sameInstant(b.start, s));
  assert.deepEqual(at.map((b) => b.appointmentId), [booked.appointmentId], 'one appointment at 13:00, the winner\'s');
}

export default [
  { name: 'widget-race', description: 'two patients take the same slot at once: one books, the other is told', run: race },
];
