// A patient books through the widget on the hospital's own site (an allowed
// origin): service, practitioner, day, slot (held on the server meanwhile),
// details, confirm. The host page hears buktor:booked, the server has the
// appointment, and the manage link's page cancels it.
import { appointment, assert, expectCount, expectText, expectVisible, sameInstant, until } from './lib.mjs';
import {
  apiSlots, choose, chooseDay, confirmBooking, eventsOf, fillPatient, openWidget, slotButton, slotStarts,
  untilApiOffers, waitEvent,
} from './widget.mjs';

async function patientBooks(t, siteName, timezoneId) {
  const site = t.config.sites[siteName];
  const tag = site.backend;
  const vaccination = site.vaccination.id;
  const grace = site.secondPractitioner.id;
  const ada = site.practitioner.id;
  // The phone as a patient types it; Buktor keeps it in E.164.
  const patient = { name: `Maria Jansen (${tag})`, email: `maria.${tag}@example.org`, phone: '+31 6 5555 0101', e164: '+31655550101' };

  // A patient whose own time zone is `timezoneId`; the hospital is in Amsterdam.
  const { context, page, w } = await openWidget(t, 'patient', site, {}, { contextOptions: { timezoneId } });
  // The manage page opens in a new tab: record its events too.
  await context.addInitScript(() => {
    if (location.pathname.includes('/manage')) {
      window.__buktorEvents = [];
      for (const type of ['buktor:ready', 'buktor:cancelled', 'buktor:rescheduled', 'buktor:error']) {
        document.addEventListener(type, (e) => window.__buktorEvents.push({ type: e.type, detail: e.detail, target: e.target.tagName.toLowerCase() }));
      }
    }
  });
  await expectText(page.locator('buktor-booking header'), site.tenantName, 'the hospital\'s name in the widget');
  await t.shot(page, `widget-start-${tag}`);

  // Service, then practitioner: the choice offers exactly the service's practitioners.
  await choose(page, { service: vaccination });
  const offered = await until('the practitioners of the service', async () => {
    const values = await w('practitioner').locator('option').evaluateAll((os) => os.map((o) => o.value));
    return values.length === 3 ? values : null;
  });
  assert.deepEqual([...offered].sort(), ['', ada, grace].sort(), 'first available, and the two practitioners of the service');
  await choose(page, { practitioner: grace });

  // The day, then its slots: exactly what the widget API offers, all Dr. Hopper's.
  await chooseDay(page, site.day);
  const api = (await apiSlots(site, vaccination, grace, site.day)).map((s) => s.start);
  assert.ok(api.length > 0, 'the API offers slots on the day');
  assert.ok(sameInstant(api[0], site.at['08:00']), `Dr. Hopper's first slot is 08:00 hospital time: ${api[0]}`);
  await until('the widget to show the API\'s slots of the day', async () => {
    const shown = await slotStarts(page);
    return shown.length === api.length && shown.every((s, i) => sameInstant(s, api[i]));
  });
  const practitioners = await page.locator('buktor-booking [data-testid=slot]').evaluateAll((els) => [...new Set(els.map((e) => e.dataset.practitioner))]);
  assert.deepEqual(practitioners, [grace], 'every slot is with the chosen practitioner');

  const start = site.at['10:30'];
  const slot = await slotButton(page, start);
  // Hospital time always; the patient's own time too when it differs.
  const label = await slot.textContent();
  assert.ok(label.includes('10:30'), `the slot shows the hospital's 10:30: ${label}`);
  if (timezoneId === site.timeZone) assert.ok(!/your time/i.test(label), `no second time when the zones agree: ${label}`);
  else assert.ok(/your time/i.test(label), `the patient's own time as well: ${label}`);
  await t.shot(page, `widget-slots-${tag}`);

  // Choosing the slot holds it: the host page hears it, the server stops offering it.
  await slot.click();
  const held = await waitEvent(page, 'buktor:slot-held');
  assert.ok(held.detail.holdId, 'the hold has an id');
  assert.ok(sameInstant(held.detail.start, start), `the held start: ${held.detail.start}`);
  assert.ok(Date.parse(held.detail.expiresAt) > Date.now(), `the hold expires in the future: ${held.detail.expiresAt}`);
  await expectText(w('hold-countdown'), /\d+:\d\d/, 'the hold countdown');
  await untilApiOffers(site, vaccination, grace, site.day, start, false);

  // Details and confirm.
  await expectCount(w('his-patient-id'), 0, 'no HIS patient id in patient mode');
  await fillPatient(page, patient);
  await t.shot(page, `widget-details-${tag}`);
  const booked = await confirmBooking(page);
  assert.ok(booked.appointmentId, 'buktor:booked names the appointment');
  assert.ok(sameInstant(booked.start, start), `buktor:booked start: ${booked.start}`);
  assert.equal(booked.practitionerId, grace);
  assert.equal(booked.serviceId, vaccination);
  assert.equal((await eventsOf(page, 'buktor:booked')).length, 1, 'one buktor:booked');
  const confirmation = w('confirmation');
  await expectText(confirmation, 'Grace Hopper', 'the confirmation names the practitioner');
  await expectText(confirmation, '10:30', 'the confirmation shows the time');
  await t.shot(page, `widget-confirmation-${tag}`);

  // The booking really exists, as the patient gave it.
  const a = await appointment(site, booked.appointmentId);
  assert.ok(a, `the server has appointment ${booked.appointmentId}`);
  assert.equal(a.status, 'BOOKED');
  assert.ok(sameInstant(a.start, start), `the appointment's start: ${a.start}`);
  assert.equal(a.practitionerId, grace);
  assert.equal(a.serviceId, vaccination);
  assert.equal(a.patient.name, patient.name);
  assert.equal(a.patient.email, patient.email);
  assert.equal(a.patient.phone, patient.e164);
  assert.ok(a.patient.hisPatientId.startsWith('web-'), `a web patient's own id: ${a.patient.hisPatientId}`);
  assert.equal(a.history[0].type, 'AppointmentBooked');
  assert.deepEqual(a.history[0].actor, { id: 'patient:widget', role: 'patient' }, 'the booking\'s actor');
  assert.equal(a.history[0].source, 'widget', 'the booking\'s source');

  // The manage link: a page of its own (signed, expiring token in the fragment).
  const link = w('manage-link');
  const href = await link.getAttribute('href');
  assert.ok(href.startsWith(`${site.server}/widget/v1/${site.tenant}/manage`), `the manage link: ${href}`);
  assert.match(href, /#token=./, 'the manage token rides in the fragment');
  const [manage] = await Promise.all([context.waitForEvent('page'), link.click()]);
  await manage.waitForLoadState();
  const status = manage.locator('[data-testid=manage-status]');
  await until('the manage page to show the booking', async () => (await status.getAttribute('data-status')) === 'booked');
  assert.ok(!manage.url().includes('token='), `the token left the manage page's address: ${manage.url()}`);
  await expectVisible(manage.getByText(patient.name, { exact: true }), 'the manage page names the patient');
  await t.shot(manage, `manage-page-${tag}`);

  // Cancel there.
  await manage.locator('[data-testid=manage-cancel]').click();
  await until('the manage page to show the cancellation', async () => (await status.getAttribute('data-status')) === 'cancelled');
  const cancelled = await waitEvent(manage, 'buktor:cancelled');
  assert.equal(cancelled.detail.appointmentId, booked.appointmentId);
  await expectCount(manage.locator('[data-testid=manage-cancel]'), 0, 'no cancel button once cancelled');
  await t.shot(manage, `manage-cancelled-${tag}`);
  const after = await until('the server to have the cancellation', async () => {
    const x = await appointment(site, booked.appointmentId);
    return x.status === 'CANCELLED' ? x : null;
  });
  const last = after.history[after.history.length - 1];
  assert.equal(last.type, 'AppointmentCancelled');
  assert.deepEqual(last.actor, { id: `patient:manage-link:${booked.appointmentId}`, role: 'patient' }, 'the cancellation\'s actor');
  assert.equal(last.source, 'widget', 'the cancellation\'s source');
  // The time is free again for everyone.
  await untilApiOffers(site, vaccination, grace, site.day, start, true);
}

export default [
  {
    name: 'widget-patient-pg',
    description: 'a patient books, is told, and cancels through the manage link (PostgreSQL, patient in New York)',
    run: (t) => patientBooks(t, 'patient-pg', 'America/New_York'),
  },
  {
    name: 'widget-patient-sqlite',
    description: 'a patient books, is told, and cancels through the manage link (embedded store, patient in Amsterdam)',
    run: (t) => patientBooks(t, 'patient-sqlite', 'Europe/Amsterdam'),
  },
];
