// A hold lapses by itself (the hospital holds for 1 minute here): A chooses a
// slot and walks away; B, on another Buktor instance, sees it vanish, then
// come back without a reload once the hold lapses; A is told HOLD_EXPIRED.
// B books it; A's lapsed hold can no longer book (HOLD_EXPIRED: the time
// was taken meanwhile). Runs beside the other scenarios: it mostly waits.
import { assert, expectVisible, sameInstant, until, widgetApi } from './lib.mjs';
import { chooseDay, confirmBooking, fillPatient, openWidget, slotButton, untilApiOffers, untilSlotShown, waitEvent } from './widget.mjs';

/** Long enough for a 1-minute hold to lapse and the stream to say so. */
const LAPSE_TIMEOUT_MS = 150_000;

async function holdExpiry(t) {
  const site = t.config.sites.expiry;
  assert.equal(site.holdMinutes, 1, 'this hospital holds for one minute');
  const service = site.services.checkup.id;
  const practitioner = site.practitioner.id;
  const s = site.at['15:00'];
  const attrs = { service, practitioner };
  const a = await openWidget(t, 'A', site, attrs, { server: site.servers[0] });
  const b = await openWidget(t, 'B', site, attrs, { server: site.servers[site.servers.length - 1] });
  for (const { page } of [a, b]) {
    await chooseDay(page, site.day);
    await slotButton(page, s, 'the 15:00 slot');
  }

  await (await slotButton(a.page, s)).click();
  const held = await waitEvent(a.page, 'buktor:slot-held');
  const countdown = a.page.locator('buktor-booking [data-testid=hold-countdown]');
  const shown = await countdown.textContent();
  assert.match(shown, /\b[01]:\d\d\b/, `a countdown from at most a minute: ${shown}`);
  await untilSlotShown(b.page, s, false, 'the held 15:00 slot to vanish from B');
  await t.shot(a.page, 'hold-A-holding');

  // Nobody does anything; the hold lapses on the server and in both widgets.
  await until('the lapsed 15:00 slot to come back to B without a reload',
    async () => (await b.page.locator('buktor-booking [data-testid=slot]').evaluateAll(
      (els, at) => els.some((e) => new Date(e.dataset.start).getTime() === new Date(at).getTime()), s)),
    { timeout: LAPSE_TIMEOUT_MS, interval: 500 });
  await untilApiOffers(site, service, practitioner, site.day, s, true);
  const error = a.page.locator('buktor-booking [data-testid=error]');
  await expectVisible(error, 'A is told the hold lapsed');
  assert.equal(await error.getAttribute('data-code'), 'HOLD_EXPIRED');
  await t.shot(a.page, 'hold-A-expired');
  await t.shot(b.page, 'hold-B-slot-back');

  // B takes the time; A's lapsed hold cannot book it any more.
  await (await slotButton(b.page, s)).click();
  await waitEvent(b.page, 'buktor:slot-held');
  await fillPatient(b.page, { name: 'Bram Later', phone: '+31 6 2222 3333' });
  const booked = await confirmBooking(b.page);
  assert.ok(sameInstant(booked.start, s));
  const late = await widgetApi(site, 'POST', 'bookings', {
    body: { holdId: held.detail.holdId, patient: { name: 'Anna Traag', email: 'anna.traag@example.org' } },
  });
  assert.equal(late.status, 409, `booking with the lapsed hold after the time was taken: ${late.text}`);
  assert.equal(late.body.code, 'HOLD_EXPIRED');
}

export default [
  { name: 'widget-hold-expiry', description: 'a hold lapses by itself, live, and a lapsed hold cannot book a taken time', parallel: true, run: holdExpiry },
];
