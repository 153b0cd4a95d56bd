// Buktor's embedded admin screens: one small page app, no build step, no
// dependencies. A hospital system (HIS) opens
//   /embed/{tenant}/admin/{screen}#token=<embed token>
// in an iframe; we swap the short-lived embed token for a session and read and
// write everything through GraphQL with it. See docs/embedding.md.
'use strict';

(() => {
  const SCREENS = ['appointments', 'schedules', 'services', 'endpoints', 'audit'];
  // What each role may do per screen. The server enforces the same rules;
  // this only keeps the UI from offering what would be refused.
  const ACCESS = {
    appointments: { admin: 'write', staff: 'write', auditor: 'read' },
    audit: { admin: 'read', staff: 'read', auditor: 'read' },
    schedules: { admin: 'write', auditor: 'read' },
    services: { admin: 'write', auditor: 'read' },
    endpoints: { admin: 'write', auditor: 'read' },
  };
  const STATUS_LABELS = {
    BOOKED: 'Booked', CHECKED_IN: 'Checked in', COMPLETED: 'Completed',
    NO_SHOW: 'No-show', CANCELLED: 'Cancelled',
  };
  // The domain's transitions (domain/src/appointment.rs): only these buttons
  // are offered, so a click never meets INVALID_TRANSITION by design.
  const ACTIONS = {
    BOOKED: [
      { status: 'CHECKED_IN', label: 'Check in', mutation: 'checkInAppointment' },
      { status: 'NO_SHOW', label: 'No-show', mutation: 'markNoShow' },
      { status: 'CANCELLED', label: 'Cancel…' },
    ],
    CHECKED_IN: [{ status: 'COMPLETED', label: 'Complete', mutation: 'completeAppointment' }],
  };
  const WEEKDAYS = ['MONDAY', 'TUESDAY', 'WEDNESDAY', 'THURSDAY', 'FRIDAY', 'SATURDAY', 'SUNDAY'];
  const POLL_MS = 30000;
  const DRAG_TYPE = 'application/x-buktor-appointment';

  const path = location.pathname.match(/^\/embed\/([^/]+)\/admin\/([^/]+)\/?$/);
  const tenantInPath = path ? decodeURIComponent(path[1]) : '';
  const base = path ? `/embed/${path[1]}/admin/` : '/';
  const storeKey = `buktor-admin:${tenantInPath}`;

  let session = null; // the /embed/v1/session answer
  let zone = 'UTC'; // the hospital's IANA time zone: every time is shown in it
  let generation = 0; // bumped per render, so late answers of a left screen are dropped
  let cleanups = []; // subscriptions and timers of the current screen
  const cache = {}; // practitioners and services, read once per page

  // sessionStorage may throw in a third-party iframe when the browser blocks
  // its storage; then we simply do without (a reload asks the HIS again).
  const store = {
    get(k) { try { return sessionStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { sessionStorage.setItem(k, v); } catch (e) { /* not kept */ } },
    del(k) { try { sessionStorage.removeItem(k); } catch (e) { /* nothing kept */ } },
    json(k) { try { return JSON.parse(this.get(k)); } catch (e) { return null; } },
  };

  // ---------- small DOM helpers (text only, never innerHTML with data) ----------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'testid') el.dataset.testid = v;
      else if (k in el && typeof v !== 'string') el[k] = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  const $ = (sel, root = document) => root.querySelector(sel);
  // replaceChildren, but skipping the null of a part a role does not get.
  const put = (el, ...kids) => el.replaceChildren(...kids.filter((k) => k !== null && k !== undefined && k !== false));
  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;

  // A labelled form control; the label is always visible (no placeholder-only fields).
  function field(label, control, hint) {
    control.id = control.id || nextId('f');
    const hintEl = hint ? h('span', { class: 'hint', id: `${control.id}-hint` }, hint) : null;
    if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
    return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
  }

  function say(text) {
    // Re-set so the same message twice is still announced.
    const s = $('#status');
    if (!s) return; // signed out meanwhile: only the auth error is on screen
    s.textContent = '';
    setTimeout(() => { s.textContent = text; }, 30);
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { s.textContent = ''; }, 8000);
  }

  function clearAlerts() { $('#alerts')?.replaceChildren(); }

  function showError(err) {
    if (!$('#alerts') || err.sessionEnded) return; // the auth error already says it all
    const code = err.code || 'ERROR';
    const alert = h('div', { class: 'alert', role: 'alert', testid: 'error', 'data-code': code },
      h('strong', {}, describeCode(code)), ' ', h('span', {}, err.message || String(err)), ' ',
      h('button', { type: 'button', class: 'link', onclick: () => alert.remove() }, 'Dismiss'));
    $('#alerts').replaceChildren(alert);
  }

  function describeCode(code) {
    return {
      FORBIDDEN: 'Not allowed:', NOT_FOUND: 'Not found:', VALIDATION: 'Check the input:',
      SLOT_TAKEN: 'That time is taken:', CONFLICT: 'Conflict:', NETWORK: 'No connection:',
    }[code] || `${code}:`;
  }

  // ---------- time: everything is shown and entered in the hospital's zone ----------

  const fmtCache = {};
  function fmt(opts) {
    const key = JSON.stringify(opts);
    return fmtCache[key] || (fmtCache[key] = new Intl.DateTimeFormat('en-GB', { timeZone: zone, ...opts }));
  }
  const fmtTime = (iso) => fmt({ hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(iso));
  const fmtDateTime = (iso) => fmt({ dateStyle: 'medium', timeStyle: 'medium', hourCycle: 'h23' }).format(new Date(iso));
  const fmtDay = (ymd) => new Intl.DateTimeFormat('en-GB', { timeZone: 'UTC', weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' })
    .format(new Date(`${ymd}T00:00:00Z`));

  // The wall-clock parts of an instant in the hospital's zone.
  function partsIn(date) {
    const o = {};
    for (const p of fmt({ year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
      .formatToParts(date)) o[p.type] = p.value;
    return o;
  }
  const localDate = (date) => { const p = partsIn(date); return `${p.year}-${p.month}-${p.day}`; };
  // For <input type=datetime-local>: `YYYY-MM-DDTHH:MM` in the hospital's zone.
  const localInputValue = (iso) => { const p = partsIn(new Date(iso)); return `${p.year}-${p.month}-${p.day}T${p.hour}:${p.minute}`; };

  // Hospital wall-clock time → instant. Intl has no reverse lookup, so guess
  // with the offset at the wall time read as UTC and correct once: that
  // settles every offset change (DST) except times that do not exist.
  function zonedToInstant(local) {
    const m = local.match(/^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/);
    if (!m) return null;
    const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
    const offsetAt = (ms) => {
      const p = partsIn(new Date(ms));
      return Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second) - Math.floor(ms / 1000) * 1000;
    };
    let t = wall - offsetAt(wall);
    t = wall - offsetAt(t);
    return new Date(t);
  }

  // Calendar arithmetic on `YYYY-MM-DD` strings (dates, not instants).
  function addDays(ymd, n) {
    const d = new Date(`${ymd}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }
  const mondayOf = (ymd) => addDays(ymd, -((new Date(`${ymd}T00:00:00Z`).getUTCDay() + 6) % 7));

  // ---------- server calls ----------

  class ApiError extends Error {
    constructor(code, message) { super(message); this.code = code; }
  }

  async function gql(query, variables) {
    let res;
    try {
      res = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${session.session}` },
        body: JSON.stringify({ query, variables }),
      });
    } catch (e) {
      throw new ApiError('NETWORK', 'Buktor could not be reached. Try again.');
    }
    const body = await res.json().catch(() => null);
    if (res.status === 401) {
      // The session ran out (8 hours) or was revoked: nothing on screen can be trusted now.
      store.del(storeKey);
      showAuthError(body?.code || 'UNAUTHENTICATED', 'Your session has ended. Open this screen again from your hospital system.');
      throw Object.assign(new ApiError(body?.code || 'UNAUTHENTICATED', 'session ended'), { sessionEnded: true });
    }
    if (body?.errors?.length) {
      const e = body.errors[0];
      throw new ApiError(e.extensions?.code || 'ERROR', e.message);
    }
    if (!res.ok || !body) throw new ApiError(body?.code || `HTTP_${res.status}`, body?.detail || res.statusText);
    return body.data;
  }

  // Runs a write and reports the outcome; a refusal stays on screen as an alert.
  async function act(fn, done) {
    clearAlerts();
    try {
      const result = await fn();
      if (done) say(done);
      return result ?? true;
    } catch (e) {
      showError(e);
      return null;
    }
  }

  // Every page of a catalogue connection (a page holds at most 500).
  // atLeast: a position the list must include (the catalogue is a read model
  // that follows the writes a moment later).
  async function allNodes(field, selection, atLeast) {
    const nodes = [];
    let after = null;
    do {
      const d = (await gql(`query($after: String, $atLeast: String) { c: ${field}(first: 500, after: $after, includeInactive: true, atLeast: $atLeast) {
          pageInfo { hasNextPage endCursor } nodes { ${selection} } } }`, { after, atLeast: atLeast || null })).c;
      nodes.push(...d.nodes);
      after = d.pageInfo.hasNextPage ? d.pageInfo.endCursor : null;
    } while (after);
    return nodes;
  }
  // Read once per page load and shared by the screens; a failed read is not kept.
  function cached(key, load) {
    cache[key] ||= load().catch((e) => { delete cache[key]; throw e; });
    return cache[key];
  }
  const practitioners = () => cached('practitioners', () => allNodes('practitioners', 'id name specialty department active'));
  const services = (atLeast) => cached('services', () => allNodes('services', `id name durationMinutes bufferBeforeMinutes
    bufferAfterMinutes capacity practitionerIds minNoticeMinutes maxAdvanceDays externalId active`, atLeast));

  // Live updates over graphql-transport-ws; on any failure the caller's poll
  // keeps the screen fresh instead, so a proxy without WebSocket still works.
  // onLive(true|false): whether changes arrive by themselves right now.
  function subscribe(query, variables, onNext, onLive) {
    let ws; let closed = false; let retry = 1000;
    const open = () => {
      ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`, 'graphql-transport-ws');
      ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${session.session}` } }));
      ws.onmessage = (m) => {
        const msg = JSON.parse(m.data);
        if (msg.type === 'connection_ack') { retry = 1000; ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query, variables } })); onLive?.(true); }
        else if (msg.type === 'ping') ws.send(JSON.stringify({ type: 'pong' }));
        else if (msg.type === 'next' && msg.payload?.data) onNext(msg.payload.data);
      };
      ws.onclose = () => { if (!closed) { onLive?.(false); setTimeout(() => !closed && open(), retry); retry = Math.min(retry * 2, 30000); } };
    };
    open();
    return () => { closed = true; ws?.close(); };
  }

  // ---------- start: token → session ----------

  async function start() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get('token');
    if (location.hash) {
      // The token must not linger in the address bar, history or a copied link.
      history.replaceState(history.state, '', location.pathname + location.search);
    }
    if (!path || !SCREENS.includes(decodeURIComponent(path[2]))) {
      return showAuthError('NOT_FOUND', 'There is no such admin screen.');
    }
    if (token) {
      let res; let body;
      try {
        res = await fetch('/embed/v1/session', {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }),
        });
        body = await res.json().catch(() => null);
      } catch (e) {
        return showAuthError('NETWORK', 'Buktor could not be reached to sign you in. Try again.');
      }
      if (!res.ok || !body?.session) {
        return showAuthError(body?.code || `HTTP_${res.status}`, authMessage(body?.code, body?.detail));
      }
      session = body;
      // sessionStorage (per tab, per origin, gone with the tab) lets a reload
      // inside the iframe keep working; never localStorage, which outlives it.
      store.set(storeKey, JSON.stringify(session));
    } else {
      session = store.json(storeKey);
      if (!session?.session || Date.parse(session.expiresAt) <= Date.now()) {
        store.del(storeKey);
        return showAuthError(session ? 'TOKEN_EXPIRED' : 'TOKEN_MISSING', authMessage(session ? 'TOKEN_EXPIRED' : 'TOKEN_MISSING'));
      }
    }
    // The page is framed under the path's hospital allow-list; a token of
    // another hospital must not show its data there.
    if (String(session.tenant?.id).toLowerCase() !== tenantInPath.toLowerCase()) {
      store.del(storeKey);
      return showAuthError('TENANT_MISMATCH', 'This sign-in belongs to another hospital. Open the screen again from your hospital system.');
    }
    zone = session.tenant?.timeZone || 'UTC';
    showShell();
    window.addEventListener('popstate', () => render(false));
    render(false);
  }

  function authMessage(code, detail) {
    const text = {
      TOKEN_INVALID: 'This link is not valid. Open the screen again from your hospital system.',
      TOKEN_EXPIRED: 'This link has expired. Open the screen again from your hospital system.',
      TOKEN_MISSING: 'No sign-in was given. Open this screen from your hospital system.',
    }[code];
    return text || `Signing in failed${detail ? `: ${detail}` : '.'}`;
  }

  // A refused token shows this and nothing else: no header, no data, no navigation.
  function showAuthError(code, message) {
    for (const c of cleanups.splice(0)) c();
    document.title = 'Buktor: not signed in';
    document.body.replaceChildren(h('main', { class: 'auth-error', testid: 'auth-error', 'data-code': code, role: 'alert' },
      h('h1', {}, 'Cannot open this screen'), h('p', {}, message), h('p', { class: 'muted' }, `Code: ${code}`)));
  }

  function showShell() {
    const tenant = session.tenant || {};
    $('#hospital').textContent = tenant.name || 'Hospital';
    $('#hospital').title = `Times are in ${zone}`;
    $('#signed-in').replaceChildren(`${session.name || session.user} `, h('span', { class: 'role' }, session.role));
    $('#signed-in').setAttribute('aria-label', `Signed in as ${session.name || session.user}, role ${session.role}`);
    $('#signed-in').title = `User ${session.user} of your hospital system`;
    if (session.role === 'auditor') {
      $('#signed-in').after(h('span', { class: 'badge read-only', testid: 'read-only' }, 'Read-only'));
    }
    for (const a of document.querySelectorAll('nav a[data-screen]')) {
      a.hidden = !ACCESS[a.dataset.screen][session.role];
      a.href = base + a.dataset.screen;
      a.addEventListener('click', (e) => {
        if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        go(a.dataset.screen);
      });
    }
    $('#top').hidden = false;
  }

  // Client-side navigation: the path stays /embed/{tenant}/admin/{screen}.
  function go(screen, query = '') {
    history.pushState(null, '', base + screen + query);
    render(true);
  }

  function render(userNavigated) {
    for (const c of cleanups.splice(0)) c();
    const gen = ++generation;
    clearAlerts();
    const screen = decodeURIComponent(location.pathname.slice(base.length).replace(/\/$/, ''));
    const main = $('#screen');
    main.dataset.testid = 'screen';
    main.dataset.screen = screen;
    for (const a of document.querySelectorAll('nav a[data-screen]')) {
      if (a.dataset.screen === screen) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    const title = screen.charAt(0).toUpperCase() + screen.slice(1);
    document.title = `${title} · Buktor`;
    const access = ACCESS[screen]?.[session.role];
    const view = h('div', { class: 'view' });
    main.replaceChildren(view);
    if (!access) {
      view.append(h('h1', {}, title), h('p', { class: 'notice', role: 'alert', testid: 'forbidden' },
        `Your role (${session.role}) cannot use the ${screen} screen. Ask a Buktor administrator of your hospital if you need it.`));
    } else {
      const ctx = { view, gen, write: access === 'write', live: () => gen === generation };
      ({ appointments, schedules, services: servicesScreen, endpoints, audit })[screen](ctx)
        .catch((e) => { if (ctx.live()) showError(e); });
    }
    if (userNavigated) main.focus();
  }

  // A practitioner picker shared by the appointments and schedules screens;
  // the choice is remembered for the tab so moving between screens keeps it.
  // The appointment list may also show a whole department (`dept:<name>`).
  async function practitionerSelect(onChange, withDepartments) {
    const list = await practitioners();
    const key = `${storeKey}:practitioner${withDepartments ? '+dept' : ''}`;
    const saved = store.get(key);
    const option = (value, text) => h('option', { value, selected: value === saved }, text);
    const people = list.map((p) => option(p.id, `${p.name} — ${p.specialty}${p.active ? '' : ' (inactive)'}`));
    const departments = [...new Set(list.filter((p) => p.active && p.department).map((p) => p.department))].sort();
    const select = h('select', { testid: 'practitioner', onchange: () => { store.set(key, select.value); onChange(select.value); } },
      withDepartments && departments.length
        ? [h('optgroup', { label: 'Practitioners' }, people), h('optgroup', { label: 'Departments' }, departments.map((d) => option(`dept:${d}`, `${d} (department)`)))]
        : people);
    if (!list.length) select.append(h('option', { value: '' }, 'No practitioners'));
    return select;
  }

  // ---------- appointments ----------

  async function appointments(ctx) {
    const today = localDate(new Date());
    const saved = store.json(`${storeKey}:appointments`) || {};
    const state = { date: saved.date || today, view: saved.view || 'day', status: saved.status || '' };
    const serviceList = await services().catch(() => []);
    const serviceName = (id) => serviceList.find((s) => s.id === id)?.name || 'Service';

    const results = h('div', { class: 'results', 'aria-live': 'polite', 'aria-busy': 'true' });
    const liveNote = h('span', { class: 'muted live', testid: 'live' }, 'Updates every 30 seconds');
    const people = await practitioners();
    const practitioner = await practitionerSelect(() => load(), true);
    const dateInput = h('input', { type: 'date', value: state.date, required: true, onchange: () => { if (dateInput.value) { state.date = dateInput.value; load(); } } });
    const viewSelect = h('select', { testid: 'view', onchange: () => { state.view = viewSelect.value; load(); } },
      h('option', { value: 'day', selected: state.view === 'day' }, 'Day'), h('option', { value: 'week', selected: state.view === 'week' }, 'Week'));
    const statusSelect = h('select', { testid: 'status-filter', onchange: () => { state.status = statusSelect.value; load(); } },
      h('option', { value: '' }, 'All statuses'),
      Object.entries(STATUS_LABELS).map(([v, l]) => h('option', { value: v, selected: state.status === v }, l)));
    const step = (n) => () => { state.date = addDays(state.date, state.view === 'week' ? 7 * n : n); dateInput.value = state.date; load(); };

    ctx.view.append(
      h('h1', {}, 'Appointments'),
      h('form', { class: 'toolbar', onsubmit: (e) => e.preventDefault(), 'aria-label': 'Which appointments' },
        field('Practitioner or department', practitioner), field('Date', dateInput), field('View', viewSelect), field('Status', statusSelect),
        h('div', { class: 'field buttons' },
          h('button', { type: 'button', onclick: step(-1), 'aria-label': 'Previous period' }, '‹ Previous'),
          h('button', { type: 'button', onclick: () => { state.date = today; dateInput.value = today; load(); } }, 'Today'),
          h('button', { type: 'button', onclick: step(1), 'aria-label': 'Next period' }, 'Next ›'))),
      h('p', { class: 'muted' }, `Times in ${zone}. `, liveNote),
      results);

    let unsubscribe = null; let subscribedFor = null;
    let loading = null; let again = false; let waitFor = null;

    // atLeast: a position the read must include (after a write or a live event).
    async function load(atLeast) {
      store.set(`${storeKey}:appointments`, JSON.stringify(state));
      if (atLeast) waitFor = atLeast;
      // One read at a time; a change meanwhile asks for one more after it.
      if (loading) { again = true; return loading; }
      loading = (async () => {
        do {
          again = false;
          const position = waitFor; waitFor = null;
          await loadOnce(position).catch((e) => { if (ctx.live()) showError(e); });
        } while (again && ctx.live());
      })();
      await loading;
      loading = null;
    }

    async function loadOnce(atLeast) {
      const choice = practitioner.value;
      if (!choice) { results.replaceChildren(h('p', {}, 'No practitioners yet.')); return; }
      const department = choice.startsWith('dept:') ? choice.slice(5) : null;
      const ids = department ? people.filter((p) => p.active && p.department === department).map((p) => p.id) : [choice];
      watch(ids);
      const from = state.view === 'week' ? mondayOf(state.date) : state.date;
      const to = state.view === 'week' ? addDays(from, 6) : from;
      results.setAttribute('aria-busy', 'true');
      // A department is its practitioners' days side by side: per practitioner
      // its working hours (the schedule) and every appointment of the period,
      // cancelled ones included (they left the agenda but not the list).
      const statusFilter = state.status ? [state.status] : null;
      // The grid of the free times to drag onto, where they are shown.
      const grid = ctx.write && !department && state.view === 'day';
      const agendas = await Promise.all(ids.map(async (id) => {
        const [schedule, booked] = await Promise.all([
          gql(`query($id: ID!, $from: NaiveDate!, $to: NaiveDate!, $atLeast: String, $grid: Boolean!) {
            practitionerSchedule(id: $id, from: $from, to: $to, atLeast: $atLeast) { days { date working { start end } free { start end } } }
            schedule(practitionerId: $id) @include(if: $grid) { rules { gridMinutes } } }`,
          { id, from, to, atLeast: atLeast || null, grid }),
          practitionerAppointments(id, from, to, statusFilter, atLeast),
        ]);
        const grids = (schedule.schedule?.rules || []).map((r) => r.gridMinutes);
        return { id, days: schedule.practitionerSchedule?.days, booked, grid: grids.length ? Math.min(...grids) : 15 };
      }));
      if (!ctx.live()) return;
      results.setAttribute('aria-busy', 'false');
      const focused = document.activeElement;
      const focusedId = focused?.closest?.('[data-testid=appointment-row]')?.dataset.id;
      seen = new Map();
      if (!department && !agendas[0].days) { results.replaceChildren(h('p', { role: 'alert' }, 'This practitioner is unknown.')); return; }
      const parts = [];
      const nameOf = (id) => people.find((p) => p.id === id)?.name || 'Practitioner';
      for (let date = from; date <= to; date = addDays(date, 1)) {
        const rows = [];
        const working = [];
        for (const a of agendas) {
          const day = a.days?.find((d) => d.date === date);
          if (day?.working.length) working.push(day.working.map((w) => `${fmtTime(w.start)}–${fmtTime(w.end)}`).join(', '));
          rows.push(...a.booked.filter((b) => localDate(new Date(b.start)) === date));
        }
        rows.sort((x, y) => x.start.localeCompare(y.start));
        const hours = department
          ? `${working.length} of ${ids.length} practitioners working`
          : (working.length ? `Working ${working[0]}` : 'Not working');
        const columns = ['Time', department ? 'Practitioner' : null, 'Patient', 'Service', 'Status', ctx.write ? 'Actions' : 'History'].filter(Boolean);
        parts.push(h('section', { class: 'day', 'aria-labelledby': `day-${date}` },
          h('h2', { id: `day-${date}` }, fmtDay(date), ' ', h('span', { class: 'muted small' }, hours)),
          rows.length
            ? h('table', { class: 'list' },
              h('caption', { class: 'sr-only' }, `Appointments on ${fmtDay(date)}`),
              h('thead', {}, h('tr', {}, columns.map((t) => h('th', { scope: 'col' }, t)))),
              h('tbody', {}, rows.map((b) => keptRow(b, department ? nameOf(b.practitionerId) : null))))
            : h('p', { class: 'muted' }, state.status ? `No ${STATUS_LABELS[state.status].toLowerCase()} appointments.` : 'No appointments.'),
          // Something to drag: a booked appointment that day.
          ctx.write && !department && state.view === 'day' && rows.some((b) => b.appointment?.status === 'BOOKED')
            ? freeTimes(date, agendas[0]) : null));
      }
      results.replaceChildren(...parts);
      kept = seen;
      // A refresh must not throw keyboard users back to the top: the same
      // control if its row was kept, else the row itself.
      if (focused?.isConnected) focused.focus();
      else if (focusedId) $(`[data-testid=appointment-row][data-id="${CSS.escape(focusedId)}"]`)?.focus();
    }

    // Every appointment of one practitioner on the hospital-local dates
    // from..=to, page by page, as the rows the list draws.
    async function practitionerAppointments(id, from, to, status, atLeast) {
      const rows = [];
      let after = null;
      do {
        const d = await gql(`query($id: ID!, $from: NaiveDate!, $to: NaiveDate!, $status: [StatusFilter!], $after: String, $atLeast: String) {
          practitionerAppointments(practitionerId: $id, from: $from, to: $to, status: $status, first: 500, after: $after, atLeast: $atLeast) {
            pageInfo { hasNextPage endCursor }
            nodes { appointment { id practitionerId serviceId start end status note patient { name hisPatientId } } } } }`,
        { id, from, to, status, after, atLeast: atLeast || null });
        const page = d.practitionerAppointments;
        for (const { appointment: a } of page.nodes) {
          rows.push({ appointmentId: a.id, practitionerId: a.practitionerId, serviceId: a.serviceId, start: a.start, end: a.end, appointment: a });
        }
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      } while (after);
      return rows;
    }

    // Refreshes (live events, polling, someone else's change) must not wipe
    // a time being typed or an open cancellation: a row whose appointment
    // did not change keeps its DOM node, so its inputs keep their state.
    let kept = new Map(); let seen = new Map();
    function keptRow(b, practitionerName) {
      const a = b.appointment;
      const sig = JSON.stringify([b.start, b.end, b.serviceId, a?.status, a?.patient, practitionerName]);
      const old = kept.get(b.appointmentId);
      const row = old?.sig === sig ? old.row : appointmentRow(b, practitionerName);
      seen.set(b.appointmentId, { sig, row });
      return row;
    }

    function appointmentRow(b, practitionerName) {
      const a = b.appointment;
      const status = a?.status || 'BOOKED';
      const who = a ? `${a.patient.name || 'Unnamed patient'}` : 'Unknown appointment';
      const row = h('tr', { testid: 'appointment-row', 'data-id': b.appointmentId, 'data-status': status, tabindex: '-1',
        draggable: ctx.write && status === 'BOOKED' ? 'true' : null,
        ondragstart: (e) => {
          dragged = { id: b.appointmentId, who };
          e.dataTransfer.setData(DRAG_TYPE, b.appointmentId);
          e.dataTransfer.effectAllowed = 'move';
        },
        ondragend: () => { dragged = null; } },
        h('td', { 'data-label': 'Time' }, h('time', { datetime: b.start }, `${fmtTime(b.start)}–${fmtTime(b.end)}`)),
        practitionerName ? h('td', { 'data-label': 'Practitioner' }, practitionerName) : null,
        h('td', { 'data-label': 'Patient' }, who, a ? h('span', { class: 'muted small block' }, `HIS ${a.patient.hisPatientId}`) : null),
        h('td', { 'data-label': 'Service' }, serviceName(b.serviceId)),
        h('td', { 'data-label': 'Status' }, h('span', { class: `badge s-${status.toLowerCase()}`, testid: 'status' }, STATUS_LABELS[status])),
        h('td', { 'data-label': ctx.write ? 'Actions' : 'History', class: 'actions' },
          ctx.write ? rowActions(b, status, who) : null,
          h('a', { href: `${base}audit?appointment=${encodeURIComponent(b.appointmentId)}`, testid: 'audit-link', onclick: (e) => {
            if (e.button || e.metaKey || e.ctrlKey || e.shiftKey) return;
            e.preventDefault(); go('audit', `?appointment=${encodeURIComponent(b.appointmentId)}`);
          } }, 'Audit trail', h('span', { class: 'sr-only' }, ` of ${who} at ${fmtTime(b.start)}`))));
      return row;
    }

    // Drag and drop: a booked row onto one of the day's free times moves the
    // appointment there (the reschedule form does the same by keyboard).
    // Free times step by the practitioner's finest grid; the server still
    // checks the schedule and says why it refuses.
    let dragged = null;
    function freeTimes(date, agenda) {
      const day = agenda.days?.find((d) => d.date === date);
      const now = Date.now();
      const times = [];
      for (const f of day?.free || []) {
        for (let t = Date.parse(f.start); t < Date.parse(f.end); t += agenda.grid * 60000) {
          if (t > now) times.push(new Date(t).toISOString());
        }
      }
      if (!times.length) return null;
      const hint = h('p', { class: 'muted small', id: `free-${date}` }, 'Free times: drag a booked appointment onto one to move it there.');
      return h('div', { class: 'free-times' }, hint,
        h('ul', { class: 'chips', 'aria-labelledby': `free-${date}` }, times.map((iso) => {
          const chip = h('li', { class: 'chip', testid: 'free-time', 'data-start': iso,
            ondragover: (e) => { if (dragged) { e.preventDefault(); e.dataTransfer.dropEffect = 'move'; chip.classList.add('over'); } },
            ondragleave: () => chip.classList.remove('over'),
            ondrop: async (e) => {
              e.preventDefault();
              chip.classList.remove('over');
              const id = e.dataTransfer.getData(DRAG_TYPE) || dragged?.id;
              const who = dragged?.who || 'The appointment';
              dragged = null;
              if (id) await reschedule(id, iso, who);
            } }, h('time', { datetime: iso }, fmtTime(iso)));
          return chip;
        })));
    }

    // Moves an appointment (by drag or by form) and shows the list after it.
    async function reschedule(id, iso, who) {
      const r = await act(() => gql('mutation($id: ID!, $start: DateTime!) { r: rescheduleAppointment(id: $id, start: $start) { position } }',
        { id, start: iso }), `${who} moved to ${fmtDateTime(iso)}.`);
      if (r) load(r.r.position);
    }

    function rowActions(b, status, who) {
      const id = b.appointmentId;
      const label = `${who} at ${fmtTime(b.start)}`;
      const box = h('div', { class: 'row-actions' });
      const cancelForm = status === 'BOOKED' ? cancelDialog(id, label, box) : null;
      for (const action of ACTIONS[status] || []) {
        box.append(h('button', {
          type: 'button', testid: 'status-action', 'data-status': action.status,
          class: action.status === 'CANCELLED' ? 'danger' : '', 'aria-label': `${action.label.replace('…', '')}: ${label}`,
          onclick: async () => {
            if (action.status === 'CANCELLED') { cancelForm.hidden = false; $('input', cancelForm).focus(); return; }
            const r = await act(() => gql(`mutation($id: ID!) { r: ${action.mutation}(id: $id) { position } }`, { id }),
              `${label}: ${STATUS_LABELS[action.status].toLowerCase()}.`);
            if (r) load(r.r.position);
          },
        }, action.label));
      }
      if (status === 'BOOKED') {
        // Rescheduling is a plain form: a datetime-local in hospital time (the
        // server checks the schedule and conflicts and says why it refuses).
        const input = h('input', { type: 'datetime-local', testid: 'reschedule-start', value: localInputValue(b.start), required: true, step: 60 });
        box.append(h('form', { class: 'reschedule', 'aria-label': `Reschedule ${label}`, onsubmit: async (e) => {
          e.preventDefault();
          const start = zonedToInstant(input.value);
          if (!start) { showError(new ApiError('VALIDATION', 'Give a new date and time.')); input.focus(); return; }
          await reschedule(id, start.toISOString(), who);
        } }, field('New start', input), h('button', { type: 'submit', testid: 'reschedule-submit' }, 'Reschedule')));
      }
      if (cancelForm) box.append(cancelForm);
      return box;
    }

    // Cancelling needs a reason (it goes to the patient and the audit trail),
    // and asking for it doubles as the confirmation a destructive step deserves.
    function cancelDialog(id, label, box) {
      const reason = h('input', { type: 'text', required: true, value: 'Cancelled by the hospital', testid: 'cancel-reason' });
      const by = h('select', { testid: 'cancel-by' }, ['HOSPITAL', 'PATIENT', 'PRACTITIONER'].map((v) => h('option', { value: v }, v.charAt(0) + v.slice(1).toLowerCase())));
      const form = h('form', { class: 'cancel-form', hidden: true, 'aria-label': `Cancel ${label}`, onsubmit: async (e) => {
        e.preventDefault();
        const r = await act(() => gql('mutation($id: ID!, $reason: String!, $by: CancelledByInput!) { r: cancelAppointment(id: $id, reason: $reason, cancelledBy: $by) { position } }',
          { id, reason: reason.value, by: by.value }), `${label}: cancelled.`);
        if (r) load(r.r.position);
      } }, field('Reason', reason), field('Cancelled by', by),
      h('button', { type: 'submit', class: 'danger', testid: 'cancel-confirm' }, 'Confirm cancellation'),
      h('button', { type: 'button', onclick: () => { form.hidden = true; box.querySelector('[data-status=CANCELLED]')?.focus(); } }, 'Keep'));
      return form;
    }

    // Live: any event of these practitioners' appointments reloads the list
    // (at least up to that event, so the read model has caught up).
    function watch(ids) {
      const key = ids.join(',');
      if (subscribedFor === key) return;
      unsubscribe?.();
      subscribedFor = key;
      let timer = null; let down = false;
      unsubscribe = subscribe('subscription($p: [ID!]) { appointmentEvents(filter: { practitionerIds: $p }) { position type } }', { p: ids },
        (data) => {
          clearTimeout(timer);
          timer = setTimeout(() => ctx.live() && load(data.appointmentEvents.position), 200);
        },
        (live) => {
          liveNote.textContent = live ? 'Live: changes appear by themselves' : 'Updates every 30 seconds';
          // Back after a drop: what happened meanwhile came by no event.
          if (live && down && ctx.live()) load();
          down = !live;
        });
    }
    // Polled even while live: working hours and free times change by
    // schedule events, which the appointment subscription does not carry.
    const poll = setInterval(() => ctx.live() && load(), POLL_MS);
    cleanups.push(() => { clearInterval(poll); unsubscribe?.(); });
    await load();
  }

  // ---------- schedules ----------

  async function schedules(ctx) {
    const practitioner = await practitionerSelect(() => load());
    const body = h('div', { 'aria-live': 'polite' });
    ctx.view.append(h('h1', {}, 'Schedules'), h('form', { class: 'toolbar', onsubmit: (e) => e.preventDefault() }, field('Practitioner', practitioner)),
      h('p', { class: 'muted' }, `Times are wall-clock in ${zone}.`), body);

    async function load() {
      const d = await gql(`query($id: ID!) { schedule(practitionerId: $id) {
          rules { weekdays start end gridMinutes effectiveFrom effectiveTo }
          exceptions { id date kind start end reason } } }`, { id: practitioner.value });
      if (!ctx.live()) return;
      if (!d.schedule) { body.replaceChildren(h('p', {}, 'This practitioner is unknown.')); return; }
      body.replaceChildren(rulesSection(d.schedule.rules), exceptionsSection(d.schedule.exceptions));
    }

    const dayName = (w) => w.charAt(0) + w.slice(1, 3).toLowerCase();

    function rulesSection(rules) {
      const section = h('section', { 'aria-labelledby': 'rules-h' }, h('h2', { id: 'rules-h' }, 'Weekly rules'));
      if (!ctx.write) {
        section.append(rules.length ? h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, ['Days', 'Hours', 'Grid', 'Effective'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, rules.map((r) => h('tr', { testid: 'schedule-rule' },
            h('td', { 'data-label': 'Days' }, r.weekdays.map(dayName).join(', ')),
            h('td', { 'data-label': 'Hours' }, `${r.start}–${r.end}`),
            h('td', { 'data-label': 'Grid' }, `${r.gridMinutes} min`),
            h('td', { 'data-label': 'Effective' }, `${r.effectiveFrom} → ${r.effectiveTo || 'open-ended'}`)))))
          : h('p', { class: 'muted' }, 'No weekly rules: the practitioner has no regular hours.'));
        return section;
      }
      // Admins edit the rules in place; setWeeklyRules replaces the whole set,
      // so the form always sends every rule that is on screen.
      const list = h('div', { class: 'rules' });
      const addRule = (r) => list.append(ruleEditor(r));
      rules.forEach(addRule);
      const form = h('form', { onsubmit: async (e) => {
        e.preventDefault();
        const input = [...list.children].map((el) => el.readRule());
        if (input.some((r) => !r.weekdays.length)) { showError(new ApiError('VALIDATION', 'Every rule needs at least one weekday.')); return; }
        const r = await act(() => gql('mutation($id: ID!, $rules: [WeeklyRuleInput!]!) { setWeeklyRules(practitionerId: $id, rules: $rules) { events } }',
          { id: practitioner.value, rules: input }), 'Weekly rules saved.');
        if (r) load();
      } }, list, h('div', { class: 'buttons' },
        h('button', { type: 'button', testid: 'add-rule', onclick: () => { addRule(null); $('input', list.lastChild).focus(); } }, 'Add rule'),
        h('button', { type: 'submit', class: 'primary', testid: 'save-rules' }, 'Save weekly rules')));
      section.append(form);
      return section;
    }

    function ruleEditor(r) {
      r = r || { weekdays: [], start: '08:00', end: '12:00', gridMinutes: 15, effectiveFrom: localDate(new Date()), effectiveTo: null };
      const boxes = WEEKDAYS.map((w) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: w, checked: r.weekdays.includes(w) }), dayName(w)));
      const start = h('input', { type: 'time', value: r.start, required: true });
      const end = h('input', { type: 'time', value: r.end, required: true });
      const grid = h('input', { type: 'number', min: 5, max: 240, step: 5, value: r.gridMinutes, required: true });
      const from = h('input', { type: 'date', value: r.effectiveFrom, required: true });
      const to = h('input', { type: 'date', value: r.effectiveTo || '' });
      const el = h('fieldset', { class: 'rule', testid: 'schedule-rule' },
        h('legend', {}, 'Rule'), h('div', { class: 'days', role: 'group', 'aria-label': 'Weekdays' }, boxes),
        h('div', { class: 'row' }, field('From', start), field('Until', end), field('Grid (minutes)', grid),
          field('Effective from', from), field('Effective to', to, 'Empty: open-ended')),
        h('button', { type: 'button', class: 'link danger', onclick: () => el.remove() }, 'Remove rule'));
      el.readRule = () => ({
        weekdays: boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value),
        start: start.value, end: end.value, gridMinutes: Number(grid.value), effectiveFrom: from.value, effectiveTo: to.value || null,
      });
      return el;
    }

    function exceptionsSection(exceptions) {
      const section = h('section', { 'aria-labelledby': 'exc-h' }, h('h2', { id: 'exc-h' }, 'Exceptions'));
      const sorted = [...exceptions].sort((a, b) => a.date.localeCompare(b.date));
      section.append(sorted.length ? h('table', { class: 'list' },
        h('thead', {}, h('tr', {}, ['Date', 'Kind', 'Time', 'Reason', ctx.write ? '' : null].filter((t) => t !== null).map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, sorted.map((x) => h('tr', { testid: 'schedule-exception', 'data-id': x.id },
          h('td', { 'data-label': 'Date' }, x.date),
          h('td', { 'data-label': 'Kind' }, x.kind === 'EXTRA_SESSION' ? 'Extra session' : 'Unavailable'),
          h('td', { 'data-label': 'Time' }, x.start ? `${x.start}–${x.end}` : 'All day'),
          h('td', { 'data-label': 'Reason' }, x.reason || '—'),
          ctx.write ? h('td', {}, h('button', { type: 'button', class: 'danger', 'aria-label': `Remove exception of ${x.date}`, onclick: async () => {
            const r = await act(() => gql('mutation($p: ID!, $x: ID!) { removeScheduleException(practitionerId: $p, exceptionId: $x) { events } }',
              { p: practitioner.value, x: x.id }), `Exception of ${x.date} removed.`);
            if (r) load();
          } }, 'Remove')) : null))))
        : h('p', { class: 'muted' }, 'No exceptions.'));
      if (ctx.write) {
        const date = h('input', { type: 'date', required: true });
        const kind = h('select', {}, h('option', { value: 'UNAVAILABLE' }, 'Unavailable (leave, holiday)'), h('option', { value: 'EXTRA_SESSION' }, 'Extra session'));
        const start = h('input', { type: 'time' });
        const end = h('input', { type: 'time' });
        const reason = h('input', { type: 'text' });
        section.append(h('form', { class: 'panel', 'aria-labelledby': 'exc-add-h', onsubmit: async (e) => {
          e.preventDefault();
          const input = { date: date.value, kind: kind.value, start: start.value || null, end: end.value || null, reason: reason.value || null };
          const r = await act(() => gql('mutation($p: ID!, $i: ScheduleExceptionInput!) { addScheduleException(practitionerId: $p, input: $i) { events } }',
            { p: practitioner.value, i: input }), `Exception on ${date.value} added.`);
          if (r) load();
        } }, h('h3', { id: 'exc-add-h' }, 'Add an exception'),
        h('div', { class: 'row' }, field('Date', date), field('Kind', kind), field('Start', start, 'Empty: the whole day'), field('End', end), field('Reason', reason)),
        h('button', { type: 'submit', class: 'primary', testid: 'add-exception' }, 'Add exception')));
      }
      return section;
    }
    await load();
  }

  // ---------- services ----------

  async function servicesScreen(ctx) {
    const body = h('div');
    ctx.view.append(h('h1', {}, 'Services'), body);
    async function load(atLeast) {
      delete cache.services;
      const [list, people] = await Promise.all([services(atLeast), practitioners()]);
      if (!ctx.live()) return;
      const names = (ids) => ids.map((id) => people.find((p) => p.id === id)?.name || id).join(', ') || '—';
      const form = ctx.write ? serviceForm(people) : null;
      put(body,
        list.length ? h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, ['Name', 'Duration', 'Buffers', 'Capacity', 'Practitioners', 'Booking window', 'State', ctx.write ? '' : null]
            .filter((t) => t !== null).map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, list.map((s) => h('tr', { testid: 'service-row', 'data-id': s.id, class: s.active ? '' : 'inactive' },
            h('td', { 'data-label': 'Name' }, s.name, s.externalId ? h('span', { class: 'muted small block' }, `HIS ${s.externalId}`) : null),
            h('td', { 'data-label': 'Duration' }, `${s.durationMinutes} min`),
            h('td', { 'data-label': 'Buffers' }, `${s.bufferBeforeMinutes} / ${s.bufferAfterMinutes} min`),
            h('td', { 'data-label': 'Capacity' }, s.capacity),
            h('td', { 'data-label': 'Practitioners' }, names(s.practitionerIds)),
            h('td', { 'data-label': 'Booking window' }, `${s.minNoticeMinutes} min notice, up to ${s.maxAdvanceDays} days ahead`),
            h('td', { 'data-label': 'State' }, s.active ? 'Active' : 'Inactive'),
            ctx.write ? h('td', { class: 'actions' },
              h('button', { type: 'button', testid: 'edit-service', 'aria-label': `Edit ${s.name}`, onclick: () => form.edit(s) }, 'Edit'),
              h('button', { type: 'button', 'aria-label': `${s.active ? 'Deactivate' : 'Activate'} ${s.name}`, onclick: async () => {
                const r = await act(() => gql('mutation($id: ID!, $a: Boolean!) { r: setServiceActive(id: $id, active: $a) { position } }', { id: s.id, a: !s.active }),
                  `${s.name} ${s.active ? 'deactivated' : 'activated'}.`);
                if (r) load(r.r.position);
              } }, s.active ? 'Deactivate' : 'Activate')) : null))))
          : h('p', { class: 'muted' }, 'No services yet.'),
        form);
    }

    function serviceForm(people) {
      let editing = null;
      const num = (value, min) => h('input', { type: 'number', min, value, required: true });
      const name = h('input', { type: 'text', required: true, testid: 'service-name' });
      const duration = num(30, 1); const before = num(0, 0); const after = num(0, 0); const capacity = num(1, 1);
      const notice = num(0, 0); const advance = num(90, 1);
      const external = h('input', { type: 'text' });
      // Inactive practitioners are listed too: leaving them out would drop them from a service on save.
      const who = people.map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', value: p.id }), p.active ? p.name : `${p.name} (inactive)`));
      const heading = h('h2', { id: 'svc-form-h' }, 'New service');
      const submit = h('button', { type: 'submit', class: 'primary', testid: 'service-submit' }, 'Create service');
      const reset = h('button', { type: 'button', hidden: true, onclick: () => fill(null) }, 'Stop editing');
      const fill = (s) => {
        editing = s;
        heading.textContent = s ? `Edit ${s.name}` : 'New service';
        submit.textContent = s ? 'Save changes' : 'Create service';
        reset.hidden = !s;
        name.value = s?.name || ''; duration.value = s?.durationMinutes ?? 30; before.value = s?.bufferBeforeMinutes ?? 0;
        after.value = s?.bufferAfterMinutes ?? 0; capacity.value = s?.capacity ?? 1; notice.value = s?.minNoticeMinutes ?? 0;
        advance.value = s?.maxAdvanceDays ?? 90; external.value = s?.externalId || '';
        for (const l of who) l.firstChild.checked = !!s?.practitionerIds.includes(l.firstChild.value);
      };
      const form = h('form', { class: 'panel', 'aria-labelledby': 'svc-form-h', onsubmit: async (e) => {
        e.preventDefault();
        const input = {
          name: name.value, durationMinutes: +duration.value, bufferBeforeMinutes: +before.value, bufferAfterMinutes: +after.value,
          capacity: +capacity.value, minNoticeMinutes: +notice.value, maxAdvanceDays: +advance.value, externalId: external.value || null,
          practitionerIds: who.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value),
        };
        const r = await act(() => (editing
          ? gql('mutation($id: ID!, $i: ServiceInput!) { r: updateService(id: $id, input: $i) { position } }', { id: editing.id, i: input })
          : gql('mutation($i: ServiceInput!) { r: defineService(input: $i) { position } }', { i: input })),
        `${input.name} ${editing ? 'saved' : 'created'}.`);
        if (r) load(r.r.position);
      } }, heading,
      h('div', { class: 'row' }, field('Name', name), field('Duration (minutes)', duration), field('Buffer before (minutes)', before),
        field('Buffer after (minutes)', after), field('Capacity', capacity, '1 for a normal visit, more for a group'),
        field('Minimum notice (minutes)', notice), field('Bookable up to (days ahead)', advance), field('HIS id', external)),
      h('fieldset', {}, h('legend', {}, 'Practitioners offering it'), h('div', { class: 'days' }, who)),
      h('div', { class: 'buttons' }, submit, reset));
      form.edit = (s) => { fill(s); name.focus(); form.scrollIntoView({ block: 'nearest' }); };
      return form;
    }
    await load();
  }

  // ---------- push endpoints ----------

  async function endpoints(ctx) {
    const list = h('div');
    const log = h('section', { 'aria-labelledby': 'log-h', hidden: true });
    const secret = h('div', { role: 'status' });
    ctx.view.append(h('h1', {}, 'Push endpoints'), secret, list, log);
    let shownLog = null;

    async function load() {
      const d = await gql(`{ webhookEndpoints { id url description eventTypes enabled disabledReason
          messageCounts { queued pending delivered dead } } }`);
      if (!ctx.live()) return;
      const eps = d.webhookEndpoints;
      put(list,
        eps.length ? h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, ['Endpoint', 'Events', 'State', 'Messages', ''].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, eps.map((ep) => h('tr', { testid: 'endpoint-row', 'data-id': ep.id, 'data-enabled': String(ep.enabled) },
            h('td', { 'data-label': 'Endpoint' }, h('span', { class: 'url' }, ep.url), ep.description ? h('span', { class: 'muted small block' }, ep.description) : null),
            h('td', { 'data-label': 'Events' }, ep.eventTypes.join(', ') || 'All'),
            h('td', { 'data-label': 'State' }, h('span', { class: `badge ${ep.enabled ? 's-completed' : 's-cancelled'}` }, ep.enabled ? 'Enabled' : 'Disabled'),
              ep.disabledReason ? h('span', { class: 'muted small block' }, ep.disabledReason) : null),
            h('td', { 'data-label': 'Messages' }, `${ep.messageCounts.delivered} delivered, ${ep.messageCounts.pending + ep.messageCounts.queued} waiting, ${ep.messageCounts.dead} dead`),
            h('td', { class: 'actions' },
              h('button', { type: 'button', testid: 'show-deliveries', 'aria-label': `Delivery log of ${ep.url}`, onclick: () => showLog(ep) }, 'Delivery log'),
              ctx.write ? h('button', { type: 'button', testid: 'toggle-endpoint', 'aria-label': `${ep.enabled ? 'Disable' : 'Enable'} ${ep.url}`, onclick: async () => {
                const r = await act(() => gql('mutation($id: ID!, $on: Boolean!) { updateWebhookEndpoint(id: $id, changes: { enabled: $on }) { id } }',
                  { id: ep.id, on: !ep.enabled }), `${ep.url} ${ep.enabled ? 'disabled' : 'enabled'}.`);
                if (r) load();
              } }, ep.enabled ? 'Disable' : 'Enable') : null)))))
          : h('p', { class: 'muted' }, 'No push endpoints.'),
        ctx.write ? createForm() : null);
      if (shownLog) { const ep = eps.find((e) => e.id === shownLog); if (ep) showLog(ep, false); }
    }

    function createForm() {
      const url = h('input', { type: 'url', required: true, placeholder: 'https://his.example.org/buktor', testid: 'endpoint-url' });
      const description = h('input', { type: 'text' });
      const types = h('input', { type: 'text' });
      return h('form', { class: 'panel', 'aria-labelledby': 'ep-new-h', onsubmit: async (e) => {
        e.preventDefault();
        const eventTypes = types.value.split(',').map((t) => t.trim()).filter(Boolean);
        const r = await act(() => gql(`mutation($i: WebhookEndpointInput!) { createWebhookEndpoint(input: $i) { secret endpoint { id url } } }`,
          { i: { url: url.value, description: description.value || null, eventTypes } }), 'Endpoint created.');
        if (!r) return;
        // The signing secret is shown once, by design: say so plainly.
        secret.replaceChildren(h('div', { class: 'notice', testid: 'endpoint-secret' },
          h('p', {}, `Signing secret of ${r.createWebhookEndpoint.endpoint.url}. Copy it now: it is not shown again.`),
          h('code', { class: 'secret' }, r.createWebhookEndpoint.secret)));
        load();
      } }, h('h2', { id: 'ep-new-h' }, 'New endpoint'),
      h('div', { class: 'row' }, field('URL', url), field('Description', description),
        field('Event types', types, 'Comma-separated, e.g. appointment.booked; empty = all')),
      h('button', { type: 'submit', class: 'primary', testid: 'endpoint-submit' }, 'Create endpoint'));
    }

    async function showLog(ep, focus = true) {
      shownLog = ep.id;
      // The log is read oldest first and only forwards, but it is looked at
      // when something just went wrong: keep the newest 100, newest first.
      let attempts = []; let total = 0; let after = null;
      do {
        const d = await gql(`query($id: ID!, $after: String) { webhookEndpoint(id: $id) { attempts(first: 500, after: $after) {
            pageInfo { hasNextPage endCursor }
            nodes { attempt messageId eventId startedAt latencyMs statusCode error outcome } } } }`, { id: ep.id, after });
        const page = d.webhookEndpoint?.attempts;
        if (!page) break;
        total += page.nodes.length;
        attempts = attempts.concat(page.nodes).slice(-100);
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      } while (after && ctx.live());
      if (!ctx.live()) return;
      attempts.reverse();
      log.hidden = false;
      put(log, h('h2', { id: 'log-h', tabindex: '-1' }, 'Delivery log: ', h('span', { class: 'url' }, ep.url)),
        total > attempts.length ? h('p', { class: 'muted' }, `The latest ${attempts.length} of ${total} attempts, newest first.`) : null,
        attempts.length ? h('table', { class: 'list' },
          h('thead', {}, h('tr', {}, ['Time', 'Message', 'Attempt', 'Answer', 'Latency', 'Outcome'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, attempts.map((a) => h('tr', { testid: 'delivery-row', 'data-outcome': a.outcome },
            h('td', { 'data-label': 'Time' }, fmtDateTime(a.startedAt)),
            h('td', { 'data-label': 'Message' }, h('code', {}, a.messageId)),
            h('td', { 'data-label': 'Attempt' }, a.attempt),
            h('td', { 'data-label': 'Answer' }, a.statusCode ? `HTTP ${a.statusCode}` : (a.error || '—')),
            h('td', { 'data-label': 'Latency' }, `${a.latencyMs} ms`),
            h('td', { 'data-label': 'Outcome' }, a.outcome)))))
          : h('p', { class: 'muted' }, 'Nothing was sent to this endpoint yet.'));
      if (focus) $('#log-h').focus();
    }
    await load();
  }

  // ---------- audit trail ----------

  async function audit(ctx) {
    const id = new URLSearchParams(location.search).get('appointment') || '';
    const input = h('input', { type: 'text', value: id, required: true, testid: 'audit-appointment', autocomplete: 'off', spellcheck: 'false' });
    const out = h('div');
    ctx.view.append(h('h1', {}, 'Audit trail'),
      h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); go('audit', `?appointment=${encodeURIComponent(input.value.trim())}`); } },
        field('Appointment id', input), h('div', { class: 'field buttons' }, h('button', { type: 'submit' }, 'Show history'))),
      out);
    if (!id) { out.append(h('p', { class: 'muted' }, 'Give an appointment id, or open "Audit trail" from an appointment in the list.')); return; }

    const a = (await gql(`query($id: ID!) { appointment(id: $id) { id status start end practitionerId serviceId
        patient { name hisPatientId } cancellation { reason cancelledBy } } }`, { id })).appointment;
    if (!ctx.live()) return;
    if (!a) { out.append(h('p', { role: 'alert', class: 'notice', testid: 'audit-not-found' }, 'No appointment with this id in your hospital.')); return; }
    // Every page of the trail: an appointment has few events, and an auditor
    // wants all of them on one screen.
    const entries = [];
    let after = null;
    do {
      const d = await gql(`query($id: ID!, $after: String) { auditTrail(appointmentId: $id, first: 100, after: $after) {
          pageInfo { hasNextPage endCursor }
          nodes { position type occurredAt actor { id role } source remoteAddr reason data } } }`, { id, after });
      entries.push(...d.auditTrail.nodes);
      after = d.auditTrail.pageInfo.hasNextPage ? d.auditTrail.pageInfo.endCursor : null;
    } while (after && ctx.live());
    if (!ctx.live()) return;
    const [people, svc] = await Promise.all([practitioners().catch(() => []), services().catch(() => [])]);
    out.append(
      h('dl', { class: 'summary', testid: 'audit-summary' },
        h('dt', {}, 'Patient'), h('dd', {}, `${a.patient.name || 'Unnamed'} (HIS ${a.patient.hisPatientId})`),
        h('dt', {}, 'When'), h('dd', {}, `${fmtDateTime(a.start)} – ${fmtTime(a.end)}`),
        h('dt', {}, 'Practitioner'), h('dd', {}, people.find((p) => p.id === a.practitionerId)?.name || a.practitionerId),
        h('dt', {}, 'Service'), h('dd', {}, svc.find((s) => s.id === a.serviceId)?.name || a.serviceId),
        h('dt', {}, 'Status'), h('dd', {}, h('span', { class: `badge s-${a.status.toLowerCase()}` }, STATUS_LABELS[a.status]),
          a.cancellation ? ` — ${a.cancellation.reason} (by ${a.cancellation.cancelledBy.toLowerCase()})` : '')),
      h('h2', {}, `History (${entries.length} ${entries.length === 1 ? 'event' : 'events'}, oldest first)`),
      h('ol', { class: 'trail' }, entries.map((e) => h('li', { testid: 'audit-entry', 'data-type': e.type },
        h('div', { class: 'trail-head' }, h('strong', {}, humanType(e.type)), ' ',
          h('time', { datetime: e.occurredAt }, fmtDateTime(e.occurredAt))),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Actor'), h('dd', { 'data-field': 'actor' }, `${e.actor.id} (${e.actor.role})`),
          h('dt', {}, 'Source'), h('dd', { 'data-field': 'source' }, e.source),
          h('dt', {}, 'Address'), h('dd', { 'data-field': 'address' }, e.remoteAddr || '—'),
          e.reason ? [h('dt', {}, 'Reason'), h('dd', { 'data-field': 'reason' }, e.reason)] : null,
          h('dt', {}, 'Position'), h('dd', {}, e.position)),
        h('details', {}, h('summary', {}, 'Recorded data'), h('pre', {}, JSON.stringify(e.data, null, 2)))))));
  }

  const humanType = (t) => t.replace(/^Appointment/, '').replace(/([a-z])([A-Z])/g, '$1 $2') || t;

  start();
})();
