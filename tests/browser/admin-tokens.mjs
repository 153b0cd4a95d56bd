// Refused embed tokens: an expired one and one whose signature was tampered
// with. The admin page shows the auth error with the right code and nothing
// else (no hospital, no screen, no navigation, no data calls). The token the
// tampered one was made from still works: the flipped character is the cause.
import { assert, expectCount, expectText, expectVisible, until } from './lib.mjs';
import { adminUrl } from './admin-frame.mjs';
import { frameHostUrl } from './hosts.mjs';

async function refused(t, site, tokenName, code) {
  const context = await t.newContext(`${tokenName}-token`);
  const page = await context.newPage();
  const calls = [];
  context.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname === '/graphql' || u.pathname.startsWith('/embed/v1/')) calls.push(`${r.method()} ${u.pathname}`);
  });
  await page.goto(frameHostUrl(t.hosts.allowed, adminUrl(site, 'appointments', site.tokens[tokenName].token)));
  const frame = page.frameLocator('#buktor');
  const error = frame.locator('[data-testid=auth-error]');
  await expectVisible(error, `the auth error for the ${tokenName} token`);
  assert.equal(await error.getAttribute('data-code'), code, `the ${tokenName} token's error code`);
  // Nothing else: the auth error is the page's only content.
  await expectCount(frame.locator('body > *:visible'), 1, 'the auth error is all the page shows');
  for (const hook of ['hospital', 'signed-in', 'screen', 'read-only', 'appointment-row', 'error']) {
    await expectCount(frame.locator(`[data-testid=${hook}]`), 0, `no ${hook} next to the auth error`);
  }
  await expectCount(frame.locator('nav'), 0, 'no navigation next to the auth error');
  // The page tried the token once, and read nothing with it.
  assert.deepEqual(calls, ['POST /embed/v1/session'], `the calls of the refused page: ${calls}`);
  await t.shot(page, `auth-error-${tokenName}`);
}

async function tokens(t) {
  const site = t.config.sites.admin;
  await refused(t, site, 'expired', 'TOKEN_EXPIRED');
  await refused(t, site, 'tampered', 'TOKEN_INVALID');

  // Control: the untampered original opens the screen.
  const page = await t.newPage('original-token');
  await page.goto(frameHostUrl(t.hosts.allowed, adminUrl(site, 'appointments', site.tokens['tamper-original'].token)));
  const frame = page.frameLocator('#buktor');
  await expectText(frame.locator('[data-testid=hospital]'), (s) => s === site.tenantName, 'the hospital, with the original token');
  await expectCount(frame.locator('[data-testid=auth-error]'), 0, 'no auth error with the original token');
  await until('the appointments screen', () => frame.locator('[data-testid=screen][data-screen=appointments]').count());
}

export default [
  { name: 'admin-tokens', description: 'expired and tampered embed tokens are refused with nothing else shown', run: tokens },
];
