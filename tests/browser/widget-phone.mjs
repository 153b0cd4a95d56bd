// On a phone, with the keyboard and by the names a screen reader reads: the
// widget fits the screen, its controls are found by their labels and roles,
// a slot is chosen with the keyboard and the focus moves on to the details.
import { devices } from 'playwright-core';
import { appointment, assert, expectReadable, expectVisible, sameInstant, until } from './lib.mjs';
import { openWidget, slotButton, waitEvent } from './widget.mjs';

async function phone(t) {
  const site = t.config.sites['patient-sqlite'];
  const { page } = await openWidget(t, 'phone', site, {}, {
    contextOptions: { ...devices['Pixel 5'], deviceScaleFactor: 1, timezoneId: site.timeZone },
  });
  const fits = () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);

  // The selects by their visible labels.
  await page.getByLabel('Service', { exact: true }).selectOption(site.services.checkup.id);
  const practitioner = page.getByLabel('Practitioner', { exact: true });
  await until('the practitioner choice to be enabled', () => practitioner.isEnabled());
  assert.equal(await practitioner.inputValue(), '', 'first available by default');

  // The day by its spoken name, with the keyboard.
  const dayName = new Intl.DateTimeFormat('en', { weekday: 'long', day: 'numeric', month: 'long', timeZone: 'UTC' })
    .format(new Date(`${site.day}T12:00:00Z`));
  const day = page.getByRole('button', { name: dayName, exact: true });
  await day.focus();
  await page.keyboard.press('Enter');
  await until(`${dayName} to be chosen`, async () => (await day.getAttribute('aria-pressed')) === 'true');
  assert.ok(await fits(), 'no sideways scrolling on a phone');
  await expectReadable(page, 'the day and slot choice');
  await t.shot(page, 'phone-slots');

  // A slot with the space bar; the focus moves to the first detail to fill in.
  const slot = await slotButton(page, site.at['11:00']);
  const practitionerId = await slot.getAttribute('data-practitioner');
  await slot.focus();
  await page.keyboard.press('Space');
  await waitEvent(page, 'buktor:slot-held');
  await until('the focus to move to the name field', () => page.evaluate(() =>
    document.querySelector('buktor-booking').shadowRoot.activeElement?.dataset.testid === 'patient-name'));
  await page.keyboard.type('Fatima El Amrani');
  await page.getByLabel('Email', { exact: true }).focus();
  await page.keyboard.type('fatima@example.org');
  assert.ok(await fits(), 'the details fit the phone too');
  await expectReadable(page, 'the details form');
  await t.shot(page, 'phone-details');

  // Enter confirms (the details are a form).
  await page.keyboard.press('Enter');
  const booked = await confirmation(page);
  assert.ok(sameInstant(booked.start, site.at['11:00']));
  assert.equal(booked.practitionerId, practitionerId, 'booked with the practitioner of the chosen slot');
  await expectVisible(page.getByRole('link', { name: /manage/i }), 'the manage link, by its name');
  assert.ok(await fits(), 'the confirmation fits the phone');
  await expectReadable(page, 'the confirmation');
  await t.shot(page, 'phone-confirmation');
  const a = await appointment(site, booked.appointmentId);
  assert.equal(a.status, 'BOOKED');
  assert.equal(a.patient.name, 'Fatima El Amrani');
  assert.equal(a.practitionerId, practitionerId);
}

/** Waits for the confirmation; returns the buktor:booked event's detail. */
async function confirmation(page) {
  await expectVisible(page.locator('buktor-booking [data-testid=confirmation]'), 'the confirmation');
  return (await waitEvent(page, 'buktor:booked')).detail;
}

export default [
  { name: 'widget-phone', description: 'on a phone, by keyboard and accessible names', run: phone },
];
