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

/**
 * The visible texts of a page or frame, shadow roots included, whose colour
 * has less contrast with what is behind them than WCAG 2.2 AA asks (4.5:1,
 * 3:1 for large text). Disabled controls are exempt, as WCAG exempts them.
 * Backgrounds are composed up the tree (through shadow hosts) over white;
 * background images are not looked at.
 */
export async function lowContrast(target) {
  return target.evaluate(() => {
    const rgba = (css) => {
      const m = css.match(/^rgba?\(([^)]+)\)$/) || css.match(/^color\(srgb ([^)]+)\)$/);
      if (!m) return null;
      const parts = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      const scale = css.startsWith('color(') ? 255 : 1;
      return { r: parts[0] * scale, g: parts[1] * scale, b: parts[2] * scale, a: parts.length > 3 ? parts[3] : 1 };
    };
    const over = (top, under) => ({
      r: top.r * top.a + under.r * (1 - top.a),
      g: top.g * top.a + under.g * (1 - top.a),
      b: top.b * top.a + under.b * (1 - top.a),
      a: 1,
    });
    const parentOf = (el) => el.parentElement || el.getRootNode().host || null;
    const backdrop = (el) => {
      const layers = [];
      for (let e = el; e; e = parentOf(e)) {
        const bg = rgba(getComputedStyle(e).backgroundColor);
        if (bg && bg.a > 0) { layers.push(bg); if (bg.a >= 1) break; }
      }
      return layers.reduceRight((under, top) => over(top, under), { r: 255, g: 255, b: 255, a: 1 });
    };
    const luminance = ({ r, g, b }) => {
      const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const elements = [];
    const walk = (root) => {
      for (const el of root.querySelectorAll('*')) {
        elements.push(el);
        if (el.shadowRoot) walk(el.shadowRoot);
      }
    };
    walk(document);
    const failures = [];
    for (const el of elements) {
      const text = [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join('').trim();
      if (!text || !el.getClientRects().length) continue;
      const style = getComputedStyle(el);
      if (style.visibility !== 'visible' || el.closest('[disabled], [aria-disabled=true]')) continue;
      if (['OPTION', 'OPTGROUP', 'SCRIPT', 'STYLE', 'TITLE'].includes(el.tagName)) continue;
      const bg = backdrop(el);
      const fg = over(rgba(style.color), bg);
      const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
      const ratio = (hi + 0.05) / (lo + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) failures.push(`${el.tagName.toLowerCase()} "${text.slice(0, 40)}": ${ratio.toFixed(2)}:1 (${style.color} on rgb(${Math.round(bg.r)}, ${Math.round(bg.g)}, ${Math.round(bg.b)}))`);
    }
    return failures;
  });
}

/** Fails with every text that is too faint to read (see lowContrast). */
export async function expectReadable(target, what) {
  const failures = await lowContrast(target);
  assert.deepEqual(failures, [], `every text of ${what} has enough contrast`);
}
