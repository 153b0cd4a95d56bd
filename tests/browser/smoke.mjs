// Smoke: the one-snippet embed. The script is served, defines the web
// component, which renders in an open shadow root on a host page of another
// origin, says it is ready and offers the hospital's services.
import { assert, expectCount, expectText, expectVisible, until, widgetApi } from './lib.mjs';
import { frameHostUrl, widgetHostUrl } from './hosts.mjs';
import { frameAncestors } from './admin-frame.mjs';
import { waitEvent } from './widget.mjs';

async function smoke(t, siteName) {
  const site = t.config.sites[siteName];

  // The script itself, as any browser gets it.
  const script = await fetch(`${site.server}/widget/v1/buktor-booking.js`);
  assert.equal(script.status, 200, 'GET /widget/v1/buktor-booking.js');
  assert.match(script.headers.get('content-type') || '', /javascript/, 'the script is served as JavaScript');
  const source = await script.text();
  assert.match(source, /customElements\.define\(\s*['"]buktor-booking['"]/, 'the script defines <buktor-booking>');

  const page = await t.newPage('patient');
  await page.goto(widgetHostUrl(t.hosts.allowed, site.server, { tenant: site.tenant }));
  await until('<buktor-booking> to be defined', () => page.evaluate(() => !!customElements.get('buktor-booking')));
  assert.equal(
    await page.evaluate(() => document.querySelector('buktor-booking').shadowRoot?.mode),
    'open',
    'the widget renders in an open shadow root',
  );
  // buktor:ready reaches the host page, from the component, bubbling and composed.
  const ready = await until('the host page to receive buktor:ready', () =>
    page.evaluate(() => window.__buktorEvents.find((e) => e.type === 'buktor:ready')),
  );
  assert.equal(ready.target, 'buktor-booking', 'buktor:ready is dispatched on the component');
  assert.equal(ready.bubbles, true, 'buktor:ready bubbles');
  assert.equal(ready.composed, true, 'buktor:ready is composed');

  // The service choice offers exactly the hospital's services.
  const service = page.locator('buktor-booking [data-testid=service]');
  await expectVisible(service, 'the service choice');
  const expected = [site.services.checkup.id, site.services.consultation.id, site.vaccination?.id].filter(Boolean).sort();
  await until('the service choice to offer the hospital\'s services', async () => {
    const values = await service.locator('option').evaluateAll((os) => os.map((o) => o.value).filter((v) => v));
    return values.sort().join() === expected.join() ? values : null;
  });
  await expectCount(page.locator('buktor-booking [data-testid=error]:visible'), 0, 'no error shown on load');
  await t.shot(page, `widget-loaded-${site.backend}`);
}

// The iframe alternative: /widget/v1/{tenant}/frame on an allowed origin
// renders the widget with the query's service and language and relays its
// events to the parent; on another origin Chromium refuses to frame it.
async function iframe(t, siteName) {
  const site = t.config.sites[siteName];
  const src = `${site.server}/widget/v1/${site.tenant}/frame?${new URLSearchParams({ service: site.services.checkup.id, lang: 'nl' })}`;

  const response = await fetch(src);
  assert.equal(response.status, 200, `GET ${src}`);
  const sources = frameAncestors(response.headers.get('content-security-policy'));
  assert.ok(sources.includes(t.hosts.allowed), `the widget page may be framed by ${t.hosts.allowed}: ${sources}`);
  assert.ok(!sources.includes(t.hosts.disallowed), `not by ${t.hosts.disallowed}: ${sources}`);

  const page = await t.newPage('portal');
  await page.goto(frameHostUrl(t.hosts.allowed, src));
  const frame = page.frameLocator('#buktor');
  await expectText(frame.locator('buktor-booking h2'), 'Afspraak maken', 'the widget in Dutch (lang=nl)');
  await until('the service from the query to be chosen', async () =>
    (await frame.locator('[data-testid=service]').inputValue()) === site.services.checkup.id);
  await expectVisible(frame.locator('[data-testid=day]'), 'days with free time');
  const ready = await until('the parent to receive buktor:ready', () =>
    page.evaluate(() => window.__messages.find((m) => m.data && m.data.type === 'buktor:ready')));
  assert.equal(ready.origin, new URL(site.server).origin, 'the message comes from Buktor\'s origin');
  await t.shot(page, 'widget-iframe');

  const other = await t.newPage('other-site');
  await other.goto(frameHostUrl(t.hosts.disallowed, src));
  await until('the iframe to finish loading', () => other.evaluate(() => window.__frameLoads >= 1));
  const refused = await (await other.locator('#buktor').elementHandle()).contentFrame();
  assert.equal(refused.url(), 'chrome-error://chromewebdata/', 'another origin gets Chromium\'s error page');
  await expectCount(other.frameLocator('#buktor').locator('buktor-booking'), 0, 'no widget in the refused frame');
  await t.shot(other, 'widget-iframe-refused');
}

// The widget API answers browsers of the hospital's allowed origins only: the
// snippet on another site gets nothing to book.
async function otherOrigin(t, siteName) {
  const site = t.config.sites[siteName];
  const allowed = await widgetApi(site, 'GET', 'config', { origin: t.hosts.allowed });
  assert.equal(allowed.status, 200, `GET config from ${t.hosts.allowed}: ${allowed.text}`);
  assert.equal(allowed.headers.get('access-control-allow-origin'), t.hosts.allowed, 'CORS for the allowed origin');
  const denied = await widgetApi(site, 'GET', 'config', { origin: t.hosts.disallowed });
  assert.equal(denied.status, 403, `GET config from ${t.hosts.disallowed}: ${denied.text}`);
  assert.equal(denied.body && denied.body.code, 'ORIGIN_NOT_ALLOWED');

  const page = await t.newPage('other-site');
  await page.goto(widgetHostUrl(t.hosts.disallowed, site.server, { tenant: site.tenant }));
  const error = await waitEvent(page, 'buktor:error');
  await expectVisible(page.locator('buktor-booking [data-testid=error]'), 'the widget\'s error on another site');
  assert.equal(await page.locator('buktor-booking [data-testid=error]').getAttribute('data-code'), error.detail.code);
  // The browser lets the widget read the refusal only if it carries CORS
  // headers for that origin; otherwise the call fails like a lost connection.
  const readable = denied.headers.get('access-control-allow-origin') === t.hosts.disallowed;
  assert.equal(error.detail.code, readable ? 'ORIGIN_NOT_ALLOWED' : 'NETWORK', 'the error the widget can know of');
  await expectCount(page.locator('buktor-booking [data-testid=service]'), 0, 'no services offered on another site');
  await expectCount(page.locator('buktor-booking [data-testid=slot]'), 0, 'no slots offered on another site');
  t.log(`the widget on another site says ${error.detail.code}: ${error.detail.detail}`);
  await t.shot(page, 'widget-other-origin');
}

export default [
  { name: 'smoke-sqlite', description: 'the widget script loads on a host page (embedded store)', run: (t) => smoke(t, 'patient-sqlite') },
  { name: 'widget-iframe', description: 'the widget as an iframe page: allowed origins only', run: (t) => iframe(t, 'patient-sqlite') },
  { name: 'widget-other-origin', description: 'the widget on a site the hospital did not allow gets nothing', run: (t) => otherOrigin(t, 'patient-pg') },
];
