// Staff book on a patient's behalf: the widget in staff mode, authenticated by
// an embed token the HIS server issued, finds the patient by HIS patient id
// (contact data the HIS recorded beforehand) and books; the appointment's
// events record the staff user as actor.
import { appointment, assert, expectCount, expectText, expectVisible, gql, sameInstant, until } from './lib.mjs';
import { choose, chooseDay, confirmBooking, openWidget, slotButton, untilApiOffers } from './widget.mjs';

async function staffBooks(t) {
  const site = t.config.sites.staff;
  const token = site.tokens.staffWidget;
  const patient = site.patient;
  const { page, w } = await openWidget(t, 'staff', site, { mode: 'staff', 'embed-token': token.token });
  const ready = (await page.evaluate(() => window.__buktorEvents)).find((e) => e.type === 'buktor:ready');
  assert.equal(ready.detail?.mode, 'staff', 'the widget runs in staff mode');

  // No patient fields to type: the patient is found by HIS patient id.
  await expectCount(w('patient-name'), 0, 'no name field in staff mode');
  await w('his-patient-id').fill('HIS-0000-unknown');
  await w('find-patient').click();
  await expectVisible(w('error'), 'an unknown HIS patient id is an error');
  assert.equal(await w('error').getAttribute('data-code'), 'PATIENT_NOT_FOUND');
  assert.equal(await w('patient-found').isVisible(), false, 'no patient shown for an unknown id');
  await w('his-patient-id').fill(patient.hisPatientId);
  await w('find-patient').click();
  const found = w('patient-found');
  await expectVisible(found, 'the patient found');
  await expectText(found, patient.name, 'the found patient\'s name');
  await expectText(found, patient.email, 'the found patient\'s email');
  await expectCount(page.locator('buktor-booking [data-testid=error]:visible'), 0, 'the error of the unknown id is gone');
  await t.shot(page, 'staff-patient-found');

  await choose(page, { service: site.services.checkup.id, practitioner: site.practitioner.id });
  await chooseDay(page, site.day);
  const start = site.at['09:00'];
  await (await slotButton(page, start)).click();
  await expectText(w('hold-countdown'), /\d+:\d\d/, 'the hold countdown');
  await t.shot(page, 'staff-slot-held');
  const booked = await confirmBooking(page);
  await expectText(w('confirmation'), patient.name, 'the confirmation says for whom');
  await t.shot(page, 'staff-confirmation');
  await untilApiOffers(site, site.services.checkup.id, site.practitioner.id, site.day, start, false);

  // The appointment: the HIS's patient with the recorded contact data, booked by the staff user.
  const a = await appointment(site, booked.appointmentId);
  assert.equal(a.status, 'BOOKED');
  assert.ok(sameInstant(a.start, start), `start ${a.start}`);
  assert.equal(a.practitionerId, site.practitioner.id);
  assert.equal(a.serviceId, site.services.checkup.id);
  assert.deepEqual(a.patient, {
    hisPatientId: patient.hisPatientId, name: patient.name, email: patient.email, phone: patient.phone.replace(/\s/g, ''),
  });
  assert.equal(a.history[0].type, 'AppointmentBooked');
  assert.deepEqual(a.history[0].actor, { id: `user:${token.user}`, role: 'staff' }, 'the booking\'s actor is the staff user');
  assert.equal(a.history[0].source, 'widget', 'a booking through the widget API is recorded as coming from the widget');

  // The audit trail (its own read model) says the same.
  const trail = await until('the audit trail of the booking', async () => {
    const d = await gql(site, `query($id: ID!) { auditTrail(appointmentId: $id) { nodes { type actor { id role } source } } }`,
      { id: booked.appointmentId });
    return d.auditTrail.nodes.length ? d.auditTrail.nodes : null;
  });
  assert.deepEqual(trail[0], { type: 'AppointmentBooked', actor: { id: `user:${token.user}`, role: 'staff' }, source: 'widget' });
}

export default [
  { name: 'widget-staff', description: 'staff book on behalf of a HIS patient, recorded as the staff user', run: staffBooks },
];
