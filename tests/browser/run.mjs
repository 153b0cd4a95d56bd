// The browser suite: one node process, one headless Debian Chromium, every
// scenario in a fresh browser context of its own. Started by
// tests/it/browser.rs, which sets up the servers and data.
//
// Protocol with the Rust test:
//   1. BUKTOR_BROWSER_CONFIG names a JSON file: the servers, tenants, ids and
//      embed tokens (see tests/it/browser.rs for its shape).
//   2. This process starts two host-page servers (two origins) and prints
//        BUKTOR_HOSTS {"allowed": "http://127.0.0.1:…", "disallowed": "http://127.0.0.1:…"}
//   3. The Rust test allows the first origin for its tenants (GraphQL
//      configureEmbedding) and writes one line, `go`, to this process's stdin.
//   4. The scenarios run; every failure is printed; the exit code is 0 only
//      if every scenario passed.
// BUKTOR_BROWSER_SCENARIOS=name,name runs only those scenarios. Scenarios
// marked `parallel` (those that mostly wait for time to pass) run beside the
// others, each still in contexts of its own.
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { startHost } from './hosts.mjs';
import { ARTIFACTS, CHROMIUM_ARGS, CHROMIUM_PATH, HERE, TIMEOUT_MS, log, resetArtifacts, screenshot } from './lib.mjs';

const SCENARIO_FILES = [
  'smoke.mjs',
  'widget-patient.mjs',
  'widget-phone.mjs',
  'widget-staff.mjs',
  'widget-live.mjs',
  'widget-race.mjs',
  'widget-hold-expiry.mjs',
  'admin-frame.mjs',
  'admin-tokens.mjs',
  'admin-roles.mjs',
];

function readConfig() {
  const file = process.env.BUKTOR_BROWSER_CONFIG;
  if (!file) throw new Error('BUKTOR_BROWSER_CONFIG is not set (the Rust test sets it)');
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** Waits for the `go` line from the Rust test (or for stdin to close: then it aborts). */
function waitForGo() {
  if (process.env.BUKTOR_BROWSER_NO_HANDSHAKE === '1') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: process.stdin });
    let answered = false;
    rl.once('line', (line) => {
      answered = true;
      rl.close();
      // An open stdin would keep this process alive after the suite.
      process.stdin.destroy();
      if (line.trim() === 'go') resolve();
      else reject(new Error(`expected "go" on stdin, got ${JSON.stringify(line)}`));
    });
    rl.once('close', () => {
      if (!answered) reject(new Error('stdin closed before "go"'));
    });
  });
}

async function main() {
  const config = readConfig();
  const wanted = (process.env.BUKTOR_BROWSER_SCENARIOS || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

  // Only this suite's screenshots, not a previous run's.
  rmSync(ARTIFACTS, { recursive: true, force: true });
  resetArtifacts();

  const allowed = await startHost('Allowed');
  const disallowed = await startHost('Disallowed');
  const hosts = { allowed: allowed.origin, disallowed: disallowed.origin };
  console.log(`BUKTOR_HOSTS ${JSON.stringify(hosts)}`);
  await waitForGo();

  const scenarios = [];
  for (const file of SCENARIO_FILES) {
    const mod = await import(path.join(HERE, file));
    for (const scenario of [].concat(mod.default)) {
      if (wanted.length === 0 || wanted.some((w) => scenario.name === w || scenario.name.startsWith(`${w}-`) || file === `${w}.mjs`)) {
        scenarios.push(scenario);
      }
    }
  }
  if (scenarios.length === 0) throw new Error(`no scenario matches BUKTOR_BROWSER_SCENARIOS=${wanted.join(',')}`);

  log(`launching ${CHROMIUM_PATH}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: CHROMIUM_ARGS,
    headless: true,
  });
  log(`Chromium ${browser.version()}; ${scenarios.length} scenario(s)`);

  const results = [];
  try {
    const beside = scenarios.filter((s) => s.parallel).map((s) => runScenario(browser, s, config, hosts));
    for (const scenario of scenarios.filter((s) => !s.parallel)) {
      results.push(await runScenario(browser, scenario, config, hosts));
    }
    results.push(...(await Promise.all(beside)));
  } finally {
    await browser.close().catch(() => {});
    await allowed.close();
    await disallowed.close();
  }

  const failed = results.filter((r) => !r.ok);
  console.log('');
  for (const r of results) {
    console.log(`${r.ok ? 'PASS' : 'FAIL'} ${r.name} (${(r.ms / 1000).toFixed(1)} s)`);
  }
  const shots = readdirSync(ARTIFACTS).filter((f) => f.endsWith('.png')).length;
  console.log(`screenshots: ${shots} in ${ARTIFACTS}`);
  console.log(`browser scenarios: ${results.length - failed.length} passed, ${failed.length} failed`);
  // Nothing left to wait for (stdout to a pipe is synchronous on Linux).
  process.exit(failed.length === 0 ? 0 : 1);
}

async function runScenario(browser, scenario, config, hosts) {
  const started = Date.now();
  const contexts = [];
  const pageLog = [];
  const t = {
    config,
    hosts,
    name: scenario.name,
    log: (...args) => log(`[${scenario.name}]`, ...args),
    /** A fresh browser context (own cookies, storage, cache), watched for page errors. */
    async newContext(label = `ctx${contexts.length + 1}`, options = {}) {
      const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, ...options });
      context.setDefaultTimeout(TIMEOUT_MS);
      context.on('page', (page) => watchPage(page, label, pageLog));
      contexts.push({ label, context });
      return context;
    },
    async newPage(label) {
      const context = await t.newContext(label);
      return context.newPage();
    },
    shot: (page, step) => screenshot(page, scenario.name, step),
  };
  log(`---- ${scenario.name}: ${scenario.description || ''}`);
  let ok = true;
  try {
    await scenario.run(t);
  } catch (e) {
    ok = false;
    console.log(`FAILED ${scenario.name}: ${e && e.stack ? e.stack : e}`);
    for (const { label, context } of contexts) {
      for (const [i, page] of context.pages().entries()) {
        try {
          const file = await screenshot(page, scenario.name, `FAILED-${label}-${i}`);
          console.log(`  failure screenshot: ${file} (${page.url()})`);
        } catch (err) {
          console.log(`  (no failure screenshot of ${label}: ${err.message})`);
        }
      }
    }
    if (pageLog.length) {
      console.log(`  what the pages logged:\n    ${pageLog.slice(-60).join('\n    ')}`);
    }
  } finally {
    for (const { context } of contexts) await context.close().catch(() => {});
  }
  const ms = Date.now() - started;
  log(`---- ${scenario.name}: ${ok ? 'passed' : 'FAILED'} in ${(ms / 1000).toFixed(1)} s`);
  return { name: scenario.name, ok, ms };
}

function watchPage(page, label, pageLog) {
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') pageLog.push(`${label} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => pageLog.push(`${label} page error: ${e.message}`));
  page.on('requestfailed', (r) => pageLog.push(`${label} request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) pageLog.push(`${label} HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  // A confirm() in a Buktor page (e.g. "cancel this appointment?") is answered yes.
  page.on('dialog', (d) => {
    pageLog.push(`${label} dialog ${d.type()}: ${d.message()} (accepted)`);
    d.accept().catch(() => {});
  });
}

main().catch((e) => {
  console.log(`browser suite could not run: ${e && e.stack ? e.stack : e}`);
  console.log('browser scenarios: 0 passed, 1 failed');
  process.exit(1);
});
