// The admin screens embedded in a HIS page: framed by an allowed origin they
// render and work (every screen, with the hospital's data, and writes that
// land with the signed-in user as actor); framed by any other origin,
// Chromium refuses to render them because of CSP frame-ancestors.
import { appointment, assert, expectCount, expectReadable, expectText, expectVisible, gql, sameInstant, until, untilEqual } from './lib.mjs';
import { frameHostUrl } from './hosts.mjs';

export function adminUrl(site, screen, token, query = '') {
  return `${site.server}/embed/${site.tenant}/admin/${screen}${query}#token=${encodeURIComponent(token)}`;
}

/** Opens `screen` of the admin app framed by `origin`; returns {page, frame}. */
export async function openFramed(t, label, origin, site, screen, token, query) {
  const page = await t.newPage(label);
  const responses = [];
  page.on('response', (r) => {
    if (r.url().includes(`/embed/${site.tenant}/admin/`)) responses.push(r);
  });
  await page.goto(frameHostUrl(origin, adminUrl(site, screen, token, query)));
  return { page, frame: page.frameLocator('#buktor'), responses };
}

/** The sources of the frame-ancestors directive of a Content-Security-Policy. */
export function frameAncestors(csp) {
  const directive = (csp || '').split(';').map((d) => d.trim()).find((d) => d.startsWith('frame-ancestors'));
  assert.ok(directive, `Content-Security-Policy has frame-ancestors: ${JSON.stringify(csp)}`);
  return directive.split(/\s+/).slice(1);
}

/** Shows `date` on the appointments screen and waits for its rows. */
export async function showDay(frame, date) {
  const dateInput = frame.locator('[data-testid=screen] input[type=date]');
  await expectVisible(dateInput, 'the appointments screen\'s date field');
  await dateInput.fill(date);
  await until(`the appointments screen to show ${date}`, () => frame.locator(`[data-testid=screen] h2[id="day-${date}"]`).count());
}

async function allowedFrame(t) {
  const site = t.config.sites.admin;
  const booked = site.appointments;
  const { page, frame, responses } = await openFramed(t, 'his', t.hosts.allowed, site, 'appointments', site.tokens['admin-appointments'].token);

  // The framed page's own answer allows this origin to frame it.
  const response = await until('the admin page\'s response', () => responses[0]);
  assert.equal(response.status(), 200);
  const sources = frameAncestors(await response.headerValue('content-security-policy'));
  assert.ok(sources.includes(t.hosts.allowed), `frame-ancestors allows ${t.hosts.allowed}: ${sources}`);

  // Who and where: the hospital's name and the signed-in user, from the token.
  await expectText(frame.locator('[data-testid=hospital]'), (s) => s === site.tenantName, `the hospital name ${site.tenantName}`);
  await expectText(frame.locator('[data-testid=signed-in]'), 'Dr. Admin Bakker');
  await expectText(frame.locator('[data-testid=signed-in]'), 'admin');
  await expectCount(frame.locator('[data-testid=read-only]'), 0, 'no read-only badge for an admin');
  await expectVisible(frame.locator('[data-testid=screen][data-screen=appointments]'), 'the appointments screen');
  // The token left the address bar once exchanged.
  const adminFrame = page.frames().find((f) => f.url().includes(`/embed/${site.tenant}/admin/appointments`));
  assert.ok(!adminFrame.url().includes('token='), `the token is gone from the frame's URL: ${adminFrame.url()}`);

  // The day's appointments, one row each, with the patients' names.
  await showDay(frame, site.day);
  const rows = frame.locator('[data-testid=appointment-row]');
  await expectCount(rows, booked.length, `${booked.length} appointment rows`);
  const ids = await rows.evaluateAll((rs) => rs.map((r) => r.dataset.id));
  assert.deepEqual([...ids].sort(), booked.map((b) => b.id).sort(), 'the rows are the booked appointments');
  for (const b of booked) {
    await expectText(frame.locator(`[data-testid=appointment-row][data-id="${b.id}"]`), b.patientName);
  }
  await expectReadable(adminFrame, 'the appointments screen');
  await t.shot(page, 'admin-appointments');

  // A status change from the framed screen: cancel the last appointment
  // (with a reason).
  const gone = booked[3];
  const row = frame.locator(`[data-testid=appointment-row][data-id="${gone.id}"]`);
  await row.locator('[data-testid=status-action][data-status=CANCELLED]').click();
  await row.locator('[data-testid=cancel-reason]').fill('Practitioner ill (browser test)');
  await row.locator('[data-testid=cancel-confirm]').click();
  const cancelled = await until('the server to have the cancellation', async () => {
    const a = await appointment(site, gone.id);
    return a.status === 'CANCELLED' ? a : null;
  });
  assert.equal(cancelled.cancellation.reason, 'Practitioner ill (browser test)');
  const last = cancelled.history[cancelled.history.length - 1];
  assert.equal(last.type, 'AppointmentCancelled');
  assert.deepEqual(last.actor, { id: 'user:admin-1', role: 'admin' }, 'the cancellation records the signed-in user as actor');
  assert.equal(last.source, 'admin', 'the cancellation is recorded as coming from the admin screens');
  // The list keeps it, marked cancelled, without actions; the status filter
  // finds it alone.
  await until('the row to show the cancellation', async () => (await row.getAttribute('data-status')) === 'CANCELLED');
  await expectText(row.locator('[data-testid=status]'), 'Cancelled');
  await expectCount(row.locator('[data-testid=status-action]'), 0, 'no status actions on a cancelled appointment');
  await frame.locator('[data-testid=status-filter]').selectOption('CANCELLED');
  await until('only the cancelled row under the filter', async () => {
    const ids = await rows.evaluateAll((rs) => rs.map((r) => r.dataset.id));
    return ids.length === 1 && ids[0] === gone.id;
  });
  await frame.locator('[data-testid=status-filter]').selectOption('');
  await expectCount(rows, booked.length, 'every appointment again without the filter');
  await expectCount(frame.locator('[data-testid=appointment-row]:not([data-status=CANCELLED])'), booked.length - 1,
    'the other appointments are still booked');

  // Reschedule by form: the third appointment to 14:00 hospital time.
  const third = frame.locator(`[data-testid=appointment-row][data-id="${booked[2].id}"]`);
  await third.locator('[data-testid=reschedule-start]').fill(site.reschedule.local);
  await third.locator('[data-testid=reschedule-submit]').click();
  await until('the server to have the new start', async () => {
    const a = await appointment(site, booked[2].id);
    return sameInstant(a.start, site.reschedule.start) ? a : null;
  });
  await until('the row to show the new time', async () => {
    const time = await frame.locator(`[data-testid=appointment-row][data-id="${booked[2].id}"] time`).getAttribute('datetime');
    return time && sameInstant(time, site.reschedule.start);
  });

  // Reschedule by drag: the second appointment onto the day's free 11:30,
  // which is then free no more.
  const second = frame.locator(`[data-testid=appointment-row][data-id="${booked[1].id}"]`);
  const freeAt = (hhmm) => frame.locator('[data-testid=free-time]', { hasText: hhmm });
  await expectCount(freeAt('11:30'), 1, 'a free time at 11:30 to drop on');
  await expectCount(freeAt('09:00'), 0, 'a booked time is not offered as free');
  const target = await freeAt('11:30').getAttribute('data-start');
  // Taken by its time cell, as a user would (the row's middle is its form).
  await second.locator('td').first().dragTo(freeAt('11:30'));
  await until('the server to have the dragged start', async () => {
    const a = await appointment(site, booked[1].id);
    return sameInstant(a.start, target) ? a : null;
  });
  await until('the row to show the dragged time', async () => {
    const time = await second.locator('time').getAttribute('datetime');
    return time && sameInstant(time, target);
  });
  await expectCount(freeAt('11:30'), 0, '11:30 is taken now');
  await expectCount(freeAt('10:00'), 1, 'the time it left is free again');
  await expectCount(frame.locator('[data-testid=error]'), 0, 'no error after the writes');
  await t.shot(page, 'admin-appointments-after-writes');

  // Every other screen, by the app's own navigation inside the frame.
  await frame.locator('nav a[data-screen=schedules]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=schedules]'), 'the schedules screen');
  await expectCount(frame.locator('[data-testid=schedule-rule]'), 1, 'the practitioner\'s one weekly rule');
  await expectVisible(frame.locator('[data-testid=save-rules]'), 'an admin may edit the rules');
  await expectReadable(adminFrame, 'the schedules screen');
  await t.shot(page, 'admin-schedules');

  await frame.locator('nav a[data-screen=services]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=services]'), 'the services screen');
  const serviceRows = frame.locator('[data-testid=service-row]');
  await expectCount(serviceRows, 2, 'the hospital\'s two services');
  assert.deepEqual(
    (await serviceRows.evaluateAll((rs) => rs.map((r) => r.dataset.id))).sort(),
    [site.services.checkup.id, site.services.consultation.id].sort(),
  );
  await expectReadable(adminFrame, 'the services screen');
  await t.shot(page, 'admin-services');

  // The push endpoint and its delivery log (the bookings were pushed to it).
  await until('the endpoint to have delivered something', async () => {
    const d = await gql(site, 'query($id: ID!) { webhookEndpoint(id: $id) { messageCounts { delivered } } }', { id: site.endpoint.id });
    return d.webhookEndpoint.messageCounts.delivered > 0;
  });
  await frame.locator('nav a[data-screen=endpoints]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=endpoints]'), 'the endpoints screen');
  const endpointRow = frame.locator('[data-testid=endpoint-row]');
  await expectCount(endpointRow, 1, 'the one endpoint');
  assert.equal(await endpointRow.getAttribute('data-id'), site.endpoint.id);
  await expectText(endpointRow, site.endpoint.url);
  await endpointRow.locator('[data-testid=show-deliveries]').click();
  await until('delivery rows', () => frame.locator('[data-testid=delivery-row]').count());
  await expectReadable(adminFrame, 'the endpoints screen');
  await t.shot(page, 'admin-endpoints');

  // The audit trail of the cancelled appointment: booked with the API key,
  // cancelled by the signed-in user.
  await frame.locator('nav a[data-screen=audit]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=audit]'), 'the audit screen');
  await frame.locator('[data-testid=audit-appointment]').fill(gone.id);
  await frame.locator('[data-testid=audit-appointment]').press('Enter');
  const entries = frame.locator('[data-testid=audit-entry]');
  // The trail is a read model a moment behind the log: ask again (as a user
  // would) until it has the cancellation.
  await untilEqual('the audit trail of the cancelled appointment', async () => {
    const types = await entries.evaluateAll((es) => es.map((e) => e.dataset.type));
    if (types.length < 2) await frame.locator('[data-testid=audit-appointment]').press('Enter');
    return types;
  }, ['AppointmentBooked', 'AppointmentCancelled'], { interval: 1000 });
  await expectText(entries.nth(0).locator('[data-field=actor]'), (s) => s.startsWith('api-key:'), 'the booking\'s actor (the API key)');
  await expectText(entries.nth(1).locator('[data-field=actor]'), (s) => s === 'user:admin-1 (admin)', 'the cancellation\'s actor');
  await expectText(entries.nth(1).locator('[data-field=source]'), (s) => s === 'admin', 'the cancellation\'s source');
  await expectText(entries.nth(1).locator('[data-field=reason]'), 'Practitioner ill', 'the cancellation\'s reason');
  await expectReadable(adminFrame, 'the audit screen');
  await t.shot(page, 'admin-audit');
}

async function disallowedFrame(t) {
  const site = t.config.sites.admin;
  const url = adminUrl(site, 'appointments', site.tokens['admin-disallowed'].token);

  // The header itself: frame-ancestors names the allowed origin, not the other.
  const response = await fetch(url.split('#')[0]);
  assert.equal(response.status, 200, 'GET the admin page');
  const sources = frameAncestors(response.headers.get('content-security-policy'));
  assert.ok(sources.includes(t.hosts.allowed), `frame-ancestors allows ${t.hosts.allowed}: ${sources}`);
  assert.ok(!sources.includes(t.hosts.disallowed), `frame-ancestors does not allow ${t.hosts.disallowed}: ${sources}`);
  assert.ok(!sources.some((s) => s.includes('*')), `frame-ancestors has no wildcard: ${sources}`);

  const context = await t.newContext('other-his');
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  const sessionCalls = [];
  context.on('request', (r) => {
    if (r.url().includes('/embed/v1/session') || r.url().includes('/graphql')) sessionCalls.push(r.url());
  });
  await page.goto(frameHostUrl(t.hosts.disallowed, url));
  // The iframe finished loading (Chromium's error page, as it turns out).
  await until('the iframe to finish loading', () => page.evaluate(() => window.__frameLoads >= 1));
  const frameHandle = await page.locator('#buktor').elementHandle();
  const frame = await frameHandle.contentFrame();
  // What Chromium does with a frame its frame-ancestors refuses: the frame
  // shows Chromium's own error page instead, and says why in the console.
  assert.equal(frame.url(), 'chrome-error://chromewebdata/', 'the refused frame is Chromium\'s error page');
  await until('Chromium to report the frame-ancestors violation', () =>
    consoleLines.find((l) => l.includes('frame-ancestors') && l.includes('has been blocked')));
  await expectCount(page.frameLocator('#buktor').locator('[data-testid=hospital]'), 0, 'no admin app in the refused frame');
  await expectCount(page.frameLocator('#buktor').locator('[data-testid=screen]'), 0, 'no admin screen in the refused frame');
  assert.deepEqual(sessionCalls, [], 'the refused admin page never ran (no session, no GraphQL)');
  await t.shot(page, 'admin-refused-frame');
}

export default [
  { name: 'admin-frame-allowed', description: 'every admin screen renders and works framed by an allowed origin', run: allowedFrame },
  { name: 'admin-frame-disallowed', description: 'framed by another origin, Chromium refuses the admin page (CSP frame-ancestors)', run: disallowedFrame },
];
