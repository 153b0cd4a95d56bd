// Helpers shared by the browser scenarios: polling assertions, GraphQL and
// widget-API calls from node, screenshots, and the launch of Debian's Chromium.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export { assert };

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = path.join(HERE, 'artifacts');

/** How long any single wait in a scenario may take before it fails. */
export const TIMEOUT_MS = Number(process.env.BUKTOR_BROWSER_TIMEOUT_MS || 20_000);

/** Debian's Chromium, headless, a fresh profile, no background networking. */
export const CHROMIUM_PATH = process.env.BUKTOR_CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

/**
 * Polls `probe` until it returns a value `accept` takes (by default: truthy),
 * then returns that value. Fails with `message` and the last value seen (or
 * the last error thrown) after `timeout` ms. This is the only way scenarios
 * wait for something that is not a locator: no fixed sleeps.
 */
export async function until(message, probe, { timeout = TIMEOUT_MS, accept = (v) => !!v, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await probe();
      lastError = undefined;
      if (accept(last)) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const seen = lastError ? `last error: ${lastError.stack || lastError}` : `last value: ${show(last)}`;
      throw new Error(`timed out after ${timeout} ms waiting for: ${message}\n${seen}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Polls until `probe()` deep-equals `expected`. */
export async function untilEqual(message, probe, expected, options = {}) {
  return until(message, probe, { ...options, accept: (v) => isDeepEqual(v, expected) }).catch((e) => {
    e.message += `\nexpected: ${show(expected)}`;
    throw e;
  });
}

function isDeepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

export function show(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

/** Waits until the locator matches exactly `n` elements. */
export async function expectCount(locator, n, message = `${locator} to match ${n} element(s)`) {
  return untilEqual(message, () => locator.count(), n);
}

/** Waits until the locator's text content (trimmed) satisfies `test` (a string = contains). */
export async function expectText(locator, test, message) {
  const ok = typeof test === 'string' ? (t) => t.includes(test) : test instanceof RegExp ? (t) => test.test(t) : test;
  return until(message || `${locator} to have text ${test}`, async () => {
    const t = ((await locator.first().textContent({ timeout: 1000 })) || '').trim();
    return ok(t) ? t : undefined;
  }, { accept: (v) => v !== undefined });
}

/** Waits for the locator's first match to be visible. */
export async function expectVisible(locator, message) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  } catch (e) {
    throw new Error(`${message || `${locator} to be visible`}: ${e.message}`);
  }
}

// --- screenshots ---------------------------------------------------------------

let shotCounter = 0;

export function resetArtifacts() {
  mkdirSync(ARTIFACTS, { recursive: true });
}

/** Saves a full-page screenshot as artifacts/<scenario>-<nn>-<step>.png. */
export async function screenshot(page, scenario, step) {
  shotCounter += 1;
  const file = path.join(ARTIFACTS, `${scenario}-${String(shotCounter).padStart(2, '0')}-${step}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// --- HTTP from node ------------------------------------------------------------

/** A GraphQL request with a bearer key; returns `data`, throws on `errors`. */
export async function gql(site, query, variables = {}, key = site.adminKey) {
  const response = await fetch(`${site.server}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`GraphQL answered ${response.status} with a body that is not JSON: ${text.slice(0, 500)}`);
  }
  if (response.status !== 200 || (body.errors && body.errors.length)) {
    throw new Error(`GraphQL failed (${response.status}): ${text.slice(0, 1000)}\nquery: ${query}`);
  }
  return body.data;
}

/** A widget-API call from node (not the browser); returns {status, body, headers}. */
export async function widgetApi(site, method, pathAndQuery, { body, auth, origin } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (auth) headers.authorization = auth;
  if (origin) headers.origin = origin;
  const response = await fetch(`${site.server}/widget/v1/${site.tenant}/${pathAndQuery}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: response.status, body: json, text, headers: response.headers };
}

/** The appointment as the server has it now (read from its events). */
export async function appointment(site, id) {
  const data = await gql(
    site,
    `query($id: ID!) { appointment(id: $id) {
       id practitionerId serviceId start end status note
       patient { hisPatientId name email phone }
       cancellation { reason }
       history { type actor { id role } source }
     } }`,
    { id },
  );
  return data.appointment;
}

/** The appointments booked on `date` for a practitioner (the agenda read model). */
export async function bookedOn(site, practitionerId, date) {
  const data = await gql(
    site,
    `query($p: ID!, $d: NaiveDate!) { practitionerSchedule(id: $p, from: $d, to: $d) {
       days { date booked { appointmentId start end } } } }`,
    { p: practitionerId, d: date },
  );
  const days = data.practitionerSchedule ? data.practitionerSchedule.days : [];
  return days.flatMap((d) => d.booked);
}

/** Same instant? (ISO strings with different offsets or precision compare equal.) */
export function sameInstant(a, b) {
  return new Date(a).getTime() === new Date(b).getTime();
}
