// Role-aware admin screens: an auditor reads everything and changes nothing;
// staff manage appointments but get no schedule or endpoint controls. Each
// "not shown" here has its "shown" counterpart (the admin in admin-frame.mjs,
// or staff on the appointments screen), so the selectors are known to match.
import { appointment, expectCount, expectText, expectVisible, until } from './lib.mjs';
import { openFramed, showDay } from './admin-frame.mjs';

/** How many of the admin site's appointments are still on the agenda (not cancelled). */
async function onAgenda(site) {
  let n = 0;
  for (const b of site.appointments) if ((await appointment(site, b.id)).status !== 'CANCELLED') n += 1;
  return n;
}

async function auditor(t) {
  const site = t.config.sites.admin;
  const { page, frame } = await openFramed(t, 'auditor', t.hosts.allowed, site, 'appointments', site.tokens['auditor-appointments'].token);
  await expectText(frame.locator('[data-testid=hospital]'), (s) => s === site.tenantName, 'the hospital name');
  await expectText(frame.locator('[data-testid=signed-in]'), 'Ellen Auditor');
  await expectVisible(frame.locator('[data-testid=read-only]'), 'the read-only badge for an auditor');

  await showDay(frame, site.day);
  const n = await onAgenda(site);
  const rows = frame.locator('[data-testid=appointment-row]:not([data-status=CANCELLED])');
  await expectCount(rows, n, 'the auditor sees every appointment of the day');
  const allRows = frame.locator('[data-testid=appointment-row]');
  await until('an audit link in every row', async () => {
    const [links, all] = [await allRows.locator('[data-testid=audit-link]').count(), await allRows.count()];
    return all >= n && links === all;
  });
  await expectCount(frame.locator('[data-testid=status-action]'), 0, 'no status actions for an auditor');
  await expectCount(frame.locator('[data-testid=reschedule-start]'), 0, 'no reschedule for an auditor');
  await expectCount(frame.locator('[data-testid=reschedule-submit]'), 0, 'no reschedule for an auditor');
  await t.shot(page, 'auditor-appointments');

  // The other screens, read-only too.
  await frame.locator('nav a[data-screen=schedules]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=schedules]'), 'the schedules screen');
  await expectCount(frame.locator('[data-testid=schedule-rule]'), 1, 'the auditor reads the weekly rule');
  await expectCount(frame.locator('[data-testid=screen] button'), 0, 'no buttons on the auditor\'s schedules screen');
  await expectCount(frame.locator('[data-testid=screen] input, [data-testid=screen] textarea'), 0, 'no inputs on the auditor\'s schedules screen');
  await t.shot(page, 'auditor-schedules');

  await frame.locator('nav a[data-screen=endpoints]').click();
  await expectVisible(frame.locator('[data-testid=screen][data-screen=endpoints]'), 'the endpoints screen');
  await expectCount(frame.locator('[data-testid=endpoint-row]'), 1, 'the auditor reads the endpoint');
  await expectCount(frame.locator('[data-testid=screen] input, [data-testid=screen] textarea'), 0, 'no inputs on the auditor\'s endpoints screen');
  await expectCount(
    frame.locator('[data-testid=screen] button:not([data-testid=show-deliveries])'),
    0,
    'no buttons but the delivery log on the auditor\'s endpoints screen',
  );
  await t.shot(page, 'auditor-endpoints');
}

async function staff(t) {
  const site = t.config.sites.admin;
  const { page, frame } = await openFramed(t, 'staff', t.hosts.allowed, site, 'appointments', site.tokens['staff-appointments'].token);
  await expectText(frame.locator('[data-testid=signed-in]'), 'Nurse Fenna Smit');
  await expectVisible(frame.locator('[data-testid=screen][data-screen=appointments]'), 'the appointments screen');
  await expectCount(frame.locator('[data-testid=read-only]'), 0, 'staff are not read-only');
  await showDay(frame, site.day);
  await expectCount(frame.locator('[data-testid=appointment-row]:not([data-status=CANCELLED])'), await onAgenda(site),
    'staff see the day\'s appointments');
  // Staff manage appointments: the booked ones offer status actions.
  await until('status actions for staff', () => frame.locator('[data-testid=status-action]').count());
  // …but the admin-only screens are not offered.
  for (const screen of ['schedules', 'services', 'endpoints']) {
    await expectCount(frame.locator(`nav a[data-screen=${screen}]:visible`), 0, `no ${screen} link for staff`);
  }
  await expectCount(frame.locator('nav a[data-screen=appointments]:visible'), 1, 'the appointments link for staff');
  await t.shot(page, 'staff-appointments');

  // Opened directly, the admin-only screens show no data and no controls.
  for (const screen of ['schedules', 'endpoints']) {
    const opened = await openFramed(t, `staff-${screen}`, t.hosts.allowed, site, screen, site.tokens[`staff-${screen}`].token);
    const f = opened.frame;
    await expectText(f.locator('[data-testid=signed-in]'), 'Nurse Fenna Smit');
    await expectVisible(f.locator(`[data-testid=screen][data-screen=${screen}]`), `the ${screen} screen's place`);
    // Wait until the screen has rendered its answer (a heading), then look.
    await until(`the ${screen} screen to render`, () => f.locator('[data-testid=screen] h1').count());
    const controls = f.locator('[data-testid=screen] button, [data-testid=screen] input, [data-testid=screen] select, [data-testid=screen] textarea, [data-testid=screen] form');
    await expectCount(controls, 0, `no controls on the ${screen} screen for staff`);
    for (const hook of ['schedule-rule', 'endpoint-row', 'delivery-row']) {
      await expectCount(f.locator(`[data-testid=${hook}]`), 0, `no ${hook} for staff`);
    }
    await t.shot(opened.page, `staff-${screen}`);
  }
}

export default [
  { name: 'admin-roles-auditor', description: 'an auditor sees read-only screens without status actions', run: auditor },
  { name: 'admin-roles-staff', description: 'staff manage appointments but get no schedule or endpoint controls', run: staff },
];
