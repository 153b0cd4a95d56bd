// Helpers for the widget scenarios: open a host page with <buktor-booking>,
// find days and slots by their contract hooks, read the host page's events.
import { assert, expectVisible, sameInstant, show, until, widgetApi } from './lib.mjs';
import { widgetHostUrl } from './hosts.mjs';

/**
 * Opens the allowed host page embedding the widget, in a fresh context.
 * `server` picks the Buktor instance the snippet loads from (default the site's first).
 */
export async function openWidget(t, label, site, attrs, { server = site.server, contextOptions = {} } = {}) {
  const context = await t.newContext(label, contextOptions);
  const page = await context.newPage();
  await page.goto(widgetHostUrl(t.hosts.allowed, server, { tenant: site.tenant, ...attrs }));
  const widget = page.locator('buktor-booking');
  await waitEvent(page, 'buktor:ready');
  return { context, page, widget, w: (testid) => widget.locator(`[data-testid=${testid}]`) };
}

/** Every buktor:* event the host page received so far. */
export function events(page) {
  return page.evaluate(() => window.__buktorEvents);
}

/** Waits for the host page to receive an event of `type` (that `accept` takes); returns it. */
export async function waitEvent(page, type, accept = () => true) {
  return until(`the host page to receive ${type}`, async () => (await events(page)).find((e) => e.type === type && accept(e)));
}

/** The events of one type the page received. */
export async function eventsOf(page, type) {
  return (await events(page)).filter((e) => e.type === type);
}

/** Chooses a service and a practitioner ('' = first available) in the selects. */
export async function choose(page, { service, practitioner }) {
  const widget = page.locator('buktor-booking');
  if (service !== undefined) await widget.locator('[data-testid=service]').selectOption(service);
  if (practitioner !== undefined) {
    const select = widget.locator('[data-testid=practitioner]');
    await until(`the practitioner choice to offer ${practitioner || 'first available'}`, () =>
      select.locator(`option[value="${practitioner}"]`).count());
    await select.selectOption(practitioner);
  }
}

/** Clicks the day button of `date` and waits for it to be the chosen one. */
export async function chooseDay(page, date) {
  const day = page.locator(`buktor-booking [data-testid=day][data-date="${date}"]`);
  await expectVisible(day, `the day ${date}`);
  await day.click();
  await until(`day ${date} to be chosen`, async () => (await day.getAttribute('aria-pressed')) === 'true');
}

/** The data-start values of the slot buttons shown now. */
export function slotStarts(page) {
  return page.locator('buktor-booking [data-testid=slot]').evaluateAll((els) => els.map((e) => e.dataset.start));
}

/** The slot button of an instant (whatever ISO form the server uses); waits for it to show. */
export async function slotButton(page, instant, message) {
  const start = await until(message || `a slot at ${instant}`, async () => (await slotStarts(page)).find((s) => sameInstant(s, instant)));
  return page.locator(`buktor-booking [data-testid=slot][data-start="${start}"]`);
}

/** Whether a slot of that instant is shown now. */
export async function showsSlot(page, instant) {
  return (await slotStarts(page)).some((s) => sameInstant(s, instant));
}

/** Waits until the slot of `instant` is (shown = true) or is not (false) on the page. */
export async function untilSlotShown(page, instant, shown, message) {
  await until(message || `the slot at ${instant} to be ${shown ? 'shown' : 'gone'}`, async () => (await showsSlot(page, instant)) === shown);
}

/** The free slot starts the widget API offers for one practitioner-day (no browser involved). */
export async function apiSlots(site, service, practitioner, date, auth) {
  const q = new URLSearchParams({ service, from: date, to: date });
  if (practitioner) q.set('practitioner', practitioner);
  const r = await widgetApi(site, 'GET', `slots?${q}`, { auth });
  assert.equal(r.status, 200, `GET slots: ${r.text}`);
  return r.body.slots;
}

/** Waits until the API does (offered = true) or does not offer `instant`. */
export async function untilApiOffers(site, service, practitioner, date, instant, offered) {
  await until(`the widget API to ${offered ? 'offer' : 'no longer offer'} ${instant}`, async () => {
    const slots = await apiSlots(site, service, practitioner, date);
    return slots.some((s) => sameInstant(s.start, instant)) === offered;
  });
}

/** Fills the patient's details in patient mode. */
export async function fillPatient(page, patient) {
  const widget = page.locator('buktor-booking');
  await widget.locator('[data-testid=patient-name]').fill(patient.name);
  if (patient.email) await widget.locator('[data-testid=patient-email]').fill(patient.email);
  if (patient.phone) await widget.locator('[data-testid=patient-phone]').fill(patient.phone);
}

/** Clicks confirm and waits for the confirmation; returns the buktor:booked event's detail. */
export async function confirmBooking(page) {
  const widget = page.locator('buktor-booking');
  await widget.locator('[data-testid=confirm]').click();
  await expectVisible(widget.locator('[data-testid=confirmation]'), 'the confirmation');
  const booked = await waitEvent(page, 'buktor:booked');
  assert.equal(booked.target, 'buktor-booking', 'buktor:booked comes from the component');
  assert.ok(booked.bubbles && booked.composed, `buktor:booked bubbles out of the shadow root: ${show(booked)}`);
  return booked.detail;
}
