// Live: two patients look at the same day, each through another Buktor
// instance on the same database. When A holds a slot, it vanishes from B's
// screen without a reload; when A moves to another slot, the first comes
// back and the second vanishes; when A books, B still does not see it.
import { assert, expectText } from './lib.mjs';
import {
  choose, chooseDay, confirmBooking, fillPatient, openWidget, showsSlot, slotButton, untilApiOffers, untilSlotShown,
  waitEvent,
} from './widget.mjs';

async function live(t) {
  const site = t.config.sites.live;
  const service = site.services.checkup.id;
  const practitioner = site.practitioner.id;
  const [s, s2, before, after] = [site.at['12:00'], site.at['14:00'], site.at['11:45'], site.at['12:15']];

  const attrs = { service, practitioner };
  const a = await openWidget(t, 'A', site, attrs, { server: site.servers[0] });
  const b = await openWidget(t, 'B', site, attrs, { server: site.servers[site.servers.length - 1] });
  for (const { page } of [a, b]) {
    await chooseDay(page, site.day);
    await slotButton(page, s, 'the 12:00 slot');
    await slotButton(page, s2, 'the 14:00 slot');
  }
  await t.shot(b.page, 'live-B-before');

  // A holds 12:00: B loses it, live, and keeps its neighbours.
  await (await slotButton(a.page, s)).click();
  await waitEvent(a.page, 'buktor:slot-held', (e) => e.detail.start && new Date(e.detail.start).getTime() === new Date(s).getTime());
  await untilSlotShown(b.page, s, false, 'the held 12:00 slot to vanish from B without a reload');
  assert.ok(await showsSlot(b.page, before), 'B still sees 11:45');
  assert.ok(await showsSlot(b.page, after), 'B still sees 12:15');
  assert.ok(await showsSlot(b.page, s2), 'B still sees 14:00');
  await t.shot(b.page, 'live-B-slot-gone');

  // A changes its mind: 14:00. The 12:00 hold is released (B sees it again),
  // the 14:00 one vanishes.
  await (await slotButton(a.page, s2)).click();
  await waitEvent(a.page, 'buktor:slot-held', (e) => new Date(e.detail.start).getTime() === new Date(s2).getTime());
  await untilSlotShown(b.page, s2, false, 'the newly held 14:00 slot to vanish from B');
  await untilSlotShown(b.page, s, true, 'the released 12:00 slot to come back to B');
  await t.shot(b.page, 'live-B-after-switch');

  // Back to 12:00, and A books it.
  await (await slotButton(a.page, s)).click();
  await untilSlotShown(b.page, s, false, 'the 12:00 slot to vanish from B again');
  await untilSlotShown(b.page, s2, true, 'the released 14:00 slot to come back to B');
  await fillPatient(a.page, { name: 'Anna Live', email: 'anna.live@example.org' });
  const booked = await confirmBooking(a.page);
  assert.equal(new Date(booked.start).getTime(), new Date(s).getTime());
  await untilApiOffers(site, service, practitioner, site.day, s, false);
  // B still does not see it: now, and after loading the slots afresh
  // (another practitioner choice and back).
  assert.ok(!(await showsSlot(b.page, s)), 'B does not see the booked 12:00 slot');
  assert.ok(await showsSlot(b.page, s2), 'B sees 14:00');
  await choose(b.page, { practitioner: '' });
  await choose(b.page, { practitioner });
  await chooseDay(b.page, site.day);
  await slotButton(b.page, s2, 'the 14:00 slot after loading afresh');
  assert.ok(!(await showsSlot(b.page, s)), 'B does not see the booked 12:00 slot after loading afresh');
  await expectText(a.page.locator('buktor-booking [data-testid=confirmation]'), '12:00');
  await t.shot(b.page, 'live-B-after-booking');
  await t.shot(a.page, 'live-A-booked');
}

export default [
  { name: 'widget-live', description: 'a slot held or booked elsewhere vanishes from another patient\'s screen without a reload', run: live },
];
