/*
 * Buktor's booking widget: the <buktor-booking> and <buktor-manage> custom
 * elements. The binding contract (attributes, widget API, events, the
 * data-testid hooks) is docs/embedding.md.
 *
 * Plain modern JavaScript with no build step and no dependencies, because a
 * hospital embeds it with one <script> tag on pages we do not control. Both
 * elements render into an open shadow root, so the host page's CSS cannot
 * break them and their tests can still reach inside; hosts theme them through
 * CSS custom properties and ::part().
 */
(() => {
  'use strict';

  // Loaded twice on one page (two snippets): keep the first definition,
  // customElements.define would throw on the second.
  if (customElements.get('buktor-booking')) return;

  // Buktor's origin defaults to where this script came from, so the snippet
  // needs no api-base. document.currentScript is only set while the script
  // first runs, so read it now.
  const SCRIPT = document.currentScript;
  const SCRIPT_ORIGIN = SCRIPT && SCRIPT.src ? new URL(SCRIPT.src, location.href).origin : location.origin;

  const WINDOW_DAYS = 14; // days shown at once; the API allows up to 31
  const EVENTS = ['ready', 'slot-held', 'booked', 'cancelled', 'rescheduled', 'error'];

  // ---------------------------------------------------------------- strings
  // UI text per language. Unknown languages fall back to English, missing
  // keys too, so a partial translation never shows a blank.
  const STRINGS = {
    en: {
      title: 'Book an appointment',
      loading: 'Loading…',
      hospitalTime: (tz) => `Times are shown in the hospital's time zone (${tz}).`,
      service: 'Service',
      chooseService: 'Choose a service',
      minutes: (n) => `${n} min`,
      practitioner: 'Practitioner',
      firstAvailable: 'First available',
      day: 'Day',
      time: 'Time',
      earlier: 'Earlier dates',
      later: 'Later dates',
      noDays: 'No free times in these two weeks.',
      noSlots: 'No free times left on this day. Please choose another day.',
      yourTime: (t) => `${t} your time`,
      slotsUpdated: 'The list of free times was updated.',
      daySlots: (n) => (n === 1 ? '1 free time' : `${n} free times`),
      holding: 'Reserving this time…',
      heldFor: 'We keep this time for you for',
      oneMinute: 'One minute left to confirm this time.',
      holdExpired: 'Your reservation of this time ran out. Please choose a time again.',
      yourAppointment: 'Your appointment',
      yourDetails: 'Your details',
      name: 'Full name',
      email: 'Email',
      phone: 'Phone',
      contactNeeded: 'Please give an email address or a phone number, so the hospital can reach you.',
      contactHint: 'An email address or a phone number is needed.',
      confirm: 'Confirm appointment',
      booking: 'Booking…',
      booked: 'Your appointment is booked',
      bookedFor: (n) => `Booked for ${n}.`,
      manage: 'Manage, move or cancel this appointment',
      bookAnother: 'Book another appointment',
      patient: 'Patient',
      hisPatientId: 'HIS patient id',
      findPatient: 'Find patient',
      findFirst: 'Please find the patient first.',
      network: 'Buktor cannot be reached. Please check the connection and try again.',
      noToken: 'Staff mode needs an embed token.',
      noTenant: 'The widget has no tenant attribute.',
      disabled: 'Online booking is not available for this hospital.',
      with: (who) => `with ${who}`,
      // <buktor-manage>
      manageTitle: 'Your appointment',
      status: 'Status',
      statuses: { booked: 'Booked', 'checked-in': 'Checked in', completed: 'Completed', 'no-show': 'Not attended', cancelled: 'Cancelled' },
      reason: 'Reason for cancelling (optional)',
      cancel: 'Cancel appointment',
      cancelled: 'The appointment is cancelled.',
      reschedule: 'Choose another time',
      moveTo: (t) => `Move the appointment to ${t}`,
      rescheduled: 'The appointment is moved.',
      noToken2: 'This link has no manage token.',
      // Said first, in the widget's language, for the API's codes a patient or
      // staff member can act on; the server's own detail follows in small print.
      codes: {
        SLOT_TAKEN: 'Sorry, someone else has just taken this time. Please choose another time.',
        HOLD_EXPIRED: 'Your reservation ran out and someone else took the time meanwhile. Please choose another time.',
        PATIENT_BOOKING_DISABLED: 'Online booking is not available for this hospital.',
        PATIENT_NOT_FOUND: 'No patient with this id was found.',
        TOKEN_EXPIRED: 'This link or sign-in has expired.',
        TOKEN_INVALID: 'This link or sign-in is not valid.',
        RATE_LIMITED: 'Too many requests. Please wait a minute and try again.',
      },
    },
    nl: {
      title: 'Afspraak maken',
      loading: 'Laden…',
      hospitalTime: (tz) => `Tijden zijn in de tijdzone van het ziekenhuis (${tz}).`,
      service: 'Zorgvraag',
      chooseService: 'Kies een zorgvraag',
      minutes: (n) => `${n} min`,
      practitioner: 'Zorgverlener',
      firstAvailable: 'Eerste beschikbare',
      day: 'Dag',
      time: 'Tijd',
      earlier: 'Eerdere data',
      later: 'Latere data',
      noDays: 'Geen vrije tijden in deze twee weken.',
      noSlots: 'Op deze dag zijn geen tijden meer vrij. Kies een andere dag.',
      yourTime: (t) => `${t} bij u`,
      slotsUpdated: 'De lijst met vrije tijden is bijgewerkt.',
      daySlots: (n) => (n === 1 ? '1 vrije tijd' : `${n} vrije tijden`),
      holding: 'Deze tijd wordt vastgehouden…',
      heldFor: 'We houden deze tijd voor u vast nog',
      oneMinute: 'Nog één minuut om deze tijd te bevestigen.',
      holdExpired: 'De gereserveerde tijd is verlopen. Kies opnieuw een tijd.',
      yourAppointment: 'Uw afspraak',
      yourDetails: 'Uw gegevens',
      name: 'Volledige naam',
      email: 'E-mail',
      phone: 'Telefoon',
      contactNeeded: 'Vul een e-mailadres of telefoonnummer in, zodat het ziekenhuis u kan bereiken.',
      contactHint: 'Een e-mailadres of telefoonnummer is nodig.',
      confirm: 'Afspraak bevestigen',
      booking: 'Bezig met boeken…',
      booked: 'Uw afspraak is gemaakt',
      bookedFor: (n) => `Geboekt voor ${n}.`,
      manage: 'Afspraak bekijken, verzetten of annuleren',
      bookAnother: 'Nog een afspraak maken',
      patient: 'Patiënt',
      hisPatientId: 'Patiëntnummer (HIS)',
      findPatient: 'Patiënt zoeken',
      findFirst: 'Zoek eerst de patiënt op.',
      network: 'Buktor is niet bereikbaar. Controleer de verbinding en probeer het opnieuw.',
      noToken: 'Voor de medewerkersmodus is een embed-token nodig.',
      noTenant: 'De widget heeft geen tenant-attribuut.',
      disabled: 'Online afspraken maken is bij dit ziekenhuis niet mogelijk.',
      with: (who) => `bij ${who}`,
      manageTitle: 'Uw afspraak',
      status: 'Status',
      statuses: { booked: 'Gepland', 'checked-in': 'Aangemeld', completed: 'Afgerond', 'no-show': 'Niet verschenen', cancelled: 'Geannuleerd' },
      reason: 'Reden van annuleren (optioneel)',
      cancel: 'Afspraak annuleren',
      cancelled: 'De afspraak is geannuleerd.',
      reschedule: 'Andere tijd kiezen',
      moveTo: (t) => `Afspraak verzetten naar ${t}`,
      rescheduled: 'De afspraak is verzet.',
      noToken2: 'Deze link bevat geen beheertoken.',
      codes: {
        SLOT_TAKEN: 'Helaas, iemand anders heeft deze tijd net genomen. Kies een andere tijd.',
        HOLD_EXPIRED: 'Uw reservering is verlopen en iemand anders heeft de tijd intussen genomen. Kies een andere tijd.',
        PATIENT_BOOKING_DISABLED: 'Online afspraken maken is bij dit ziekenhuis niet mogelijk.',
        PATIENT_NOT_FOUND: 'Er is geen patiënt met dit nummer gevonden.',
        TOKEN_EXPIRED: 'Deze link of aanmelding is verlopen.',
        TOKEN_INVALID: 'Deze link of aanmelding is niet geldig.',
        RATE_LIMITED: 'Te veel verzoeken. Wacht een minuut en probeer het opnieuw.',
      },
    },
  };

  // ------------------------------------------------------------------ style
  // Custom properties are the theming API; every colour falls back to a
  // default with at least 4.5:1 contrast on the default background.
  const CSS = `
    :host { display: block; box-sizing: border-box; container-type: inline-size;
      font-family: var(--buktor-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
      color: var(--buktor-fg, #1d2125); background: var(--buktor-bg, #ffffff);
      --_accent: var(--buktor-accent, #0a58ca); --_radius: var(--buktor-radius, 8px);
      --_line: color-mix(in srgb, currentColor 45%, transparent);
      line-height: 1.45; font-size: 1rem; }
    :host([hidden]), [hidden] { display: none !important; }
    *, *::before, *::after { box-sizing: border-box; }
    .w { display: grid; gap: 1.1rem; padding: 1rem; }
    .pick, .stack { display: grid; gap: 1.1rem; }
    h2 { font-size: 1.3rem; margin: 0; }
    h3 { font-size: 1.05rem; margin: 0 0 .5rem; }
    p { margin: 0; }
    p:empty { display: none; }
    .small { font-size: .875rem; }
    section { display: grid; gap: .6rem; }
    .fields { display: grid; gap: .8rem; grid-template-columns: repeat(auto-fit, minmax(min(15rem, 100%), 1fr)); }
    .field { display: grid; gap: .3rem; }
    label { font-weight: 600; }
    select, input, textarea { font: inherit; font-weight: 400; color: inherit; background: var(--buktor-bg, #ffffff);
      width: 100%; min-height: 2.75rem; padding: .55rem .7rem;
      border: 1px solid var(--_line); border-radius: var(--_radius); }
    button { font: inherit; min-height: 2.75rem; padding: .45rem .8rem; cursor: pointer;
      color: var(--_accent); background: transparent; border: 2px solid var(--_accent); border-radius: var(--_radius); }
    button[aria-pressed="true"], button.primary { color: var(--buktor-accent-fg, #ffffff); background: var(--_accent); }
    button:disabled { cursor: not-allowed; opacity: .55; }
    button:hover:not(:disabled) { box-shadow: 0 0 0 1px var(--_accent) inset; }
    :focus-visible { outline: 3px solid var(--_accent); outline-offset: 2px; }
    a { color: var(--_accent); font-weight: 600; }
    .grid { display: grid; gap: .5rem; grid-template-columns: repeat(auto-fill, minmax(6.5rem, 1fr)); }
    .grid:focus { outline: none; }
    .day, .slot { display: grid; justify-items: center; line-height: 1.2; }
    .slot .t { font-weight: 700; }
    .day .d { font-weight: 700; }
    .row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; }
    .row > .field { flex: 1 1 12rem; }
    .box { border: 1px solid var(--_line); border-radius: var(--_radius); padding: .9rem; }
    .countdown strong { font-variant-numeric: tabular-nums; }
    .err { border-left: 5px solid #b3261e; background: #fdecea; color: #5c1410; padding: .7rem .9rem; border-radius: var(--_radius); }
    .ok { border-left: 5px solid #1e7b34; background: #e9f6ed; color: #0f3d1a; }
    .ok a { color: #0b4f8a; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); white-space: nowrap; }
    @container (max-width: 24rem) { .w { padding: .6rem; } .grid { grid-template-columns: repeat(auto-fill, minmax(5.2rem, 1fr)); } }
  `;

  // ---------------------------------------------------------------- helpers
  /** Builds an element: h('button', {testid: 'slot', onclick: f}, 'text'). */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'testid') el.dataset.testid = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return fill(el, kids);
  }

  /**
   * A labelled form control. The label names the control by `for` rather than
   * by wrapping it, so that its accessible name is the label alone and not the
   * label followed by the chosen option.
   */
  function field(text, control) {
    return h('div', { class: 'field', part: 'field' }, h('label', { for: control.id }, text), control);
  }

  /** Replaces an element's children; nested arrays flatten, null/false are skipped. */
  function fill(el, ...kids) {
    el.replaceChildren(...kids.flat(Infinity).filter((x) => x != null && x !== false));
    return el;
  }

  /**
   * Updates a list's children in place by key, so a slot that stays keeps its
   * DOM node (and the keyboard focus on it) when the live stream replaces a
   * day; only slots that went away are removed.
   */
  function syncList(box, items) {
    const old = new Map([...box.children].map((el) => [el._key, el]));
    const focused = box.getRootNode().activeElement;
    let prev = null;
    for (const { key, make, update } of items) {
      let el = old.get(key);
      if (el) old.delete(key);
      else (el = make())._key = key;
      update(el);
      const at = prev ? prev.nextSibling : box.firstChild;
      if (el !== at) box.insertBefore(el, at);
      prev = el;
    }
    for (const el of old.values()) el.remove();
    // The focused slot vanished: keep focus in the list instead of dropping it to <body>.
    if (focused && !focused.isConnected && box.isConnected) box.focus();
  }

  const DAY_MS = 86400000;
  const addDays = (ymd, n) => new Date(Date.parse(`${ymd}T00:00:00Z`) + n * DAY_MS).toISOString().slice(0, 10);

  /** Today's date (YYYY-MM-DD) in a time zone; the browser's own without one. */
  function today(tz) {
    const opts = { year: 'numeric', month: '2-digit', day: '2-digit' };
    let parts;
    try { parts = new Intl.DateTimeFormat('en-CA', { ...opts, timeZone: tz || undefined }).formatToParts(new Date()); }
    catch { parts = new Intl.DateTimeFormat('en-CA', opts).formatToParts(new Date()); }
    const p = Object.fromEntries(parts.map((x) => [x.type, x.value]));
    return `${p.year}-${p.month}-${p.day}`;
  }

  const formatters = new Map();
  function fmt(lang, opts, date) {
    const key = lang + JSON.stringify(opts);
    let f = formatters.get(key);
    if (!f) {
      // An unknown language falls back to English in the same zone; only a
      // zone the browser does not know falls back to UTC.
      try { f = new Intl.DateTimeFormat(lang, opts); } catch {
        try { f = new Intl.DateTimeFormat('en', opts); }
        catch { f = new Intl.DateTimeFormat('en', { ...opts, timeZone: opts.timeZone === undefined ? undefined : 'UTC' }); }
      }
      formatters.set(key, f);
    }
    return f.format(date);
  }

  const LOCAL_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d/;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const sameSlot = (a, b) => a && b && a.start === b.start && a.practitionerId === b.practitionerId;
  const normStatus = (s) => String(s || '').toLowerCase().replace(/_/g, '-');

  /** A problem-details error from the API ({code, detail, status}). */
  class ApiError extends Error {
    constructor({ code, detail, status }) {
      super(detail || code);
      Object.assign(this, { code: code || 'ERROR', detail: detail || code || 'Error', status: status || 0 });
    }
  }

  /**
   * Reads a text/event-stream body and calls onEvent(type, data) per event.
   * EventSource cannot send an Authorization header, which staff mode needs,
   * so the stream is read with fetch and parsed here (WHATWG SSE rules,
   * minus `id`/`retry`, which Buktor does not send).
   */
  async function readEventStream(body, onEvent) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    let type = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      const lines = buf.split(/\r\n|\r|\n/);
      buf = lines.pop(); // an unfinished line waits for the next chunk
      for (const line of lines) {
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'));
          type = '';
          data = [];
        } else if (line[0] !== ':') { // ':' starts a keep-alive comment
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? '' : line.slice(i + 1);
          if (val[0] === ' ') val = val.slice(1);
          if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
        }
      }
    }
  }

  // ------------------------------------------------------------ base class
  /**
   * What both elements share: the API client, strings and date formatting,
   * errors and announcements, and the slot picker with its live stream, hold
   * and countdown. Subclasses build their own page around it.
   */
  class Base extends HTMLElement {
    constructor() {
      super();
      this.attachShadow({ mode: 'open' });
      this.gen = 0; // bumped on every (re)start, so answers to an old start are dropped
      this.slotDays = new Map(); // "practitionerId|date" -> that practitioner-day's free slots
      this.errorSpot = h('div'); // where errors show; each page places it near its actions
    }

    connectedCallback() { this.schedule(); }
    disconnectedCallback() { this.teardown(); }
    attributeChangedCallback() { if (this.isConnected) this.schedule(); }

    /** Restarts once per task however many attributes a host sets in a row. */
    schedule() {
      if (this.pending) return;
      this.pending = true;
      queueMicrotask(() => {
        this.pending = false;
        if (!this.isConnected) return;
        this.teardown();
        const gen = ++this.gen;
        this.start(gen).catch((e) => {
          if (gen !== this.gen) return;
          if (this.loading) this.loading.remove();
          this.fail(e);
        });
      });
    }

    teardown() {
      this.gen++;
      this.stopStream();
      this.releaseHold(true);
    }

    get lang() { return (this.getAttribute('lang') || 'en').trim() || 'en'; }
    get t() {
      const base = this.lang.toLowerCase().split('-')[0];
      return { ...STRINGS.en, ...(STRINGS[base] || {}) };
    }
    get tenant() { return (this.getAttribute('tenant') || '').trim(); }
    get apiBase() { return (this.getAttribute('api-base') || SCRIPT_ORIGIN).replace(/\/+$/, ''); }

    /**
     * Calls the API and returns the parsed JSON (null for 204). Paths that
     * start with '/' are from Buktor's root, others from /widget/v1/{tenant}/.
     * Throws ApiError for a problem answer or an unreachable server.
     */
    async api(method, path, { body, auth = this.auth, keepalive = false } = {}) {
      const url = path.startsWith('/')
        ? this.apiBase + path
        : `${this.apiBase}/widget/v1/${encodeURIComponent(this.tenant)}/${path}`;
      const headers = { Accept: 'application/json' };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      if (auth) headers.Authorization = auth;
      let res;
      try {
        // No cookies: the widget authenticates with headers only (contract: CORS without credentials).
        res = await fetch(url, { method, headers, keepalive, credentials: 'omit', cache: 'no-store',
          body: body === undefined ? undefined : JSON.stringify(body) });
      } catch {
        throw new ApiError({ code: 'NETWORK', detail: this.t.network });
      }
      const text = res.status === 204 ? '' : await res.text();
      let data = null;
      try { data = text ? JSON.parse(text) : null; } catch { /* not JSON: handled below */ }
      if (!res.ok) {
        const err = new ApiError(data && data.code ? data : {
          code: `HTTP_${res.status}`, status: res.status,
          detail: (data && (data.detail || data.title)) || `${res.status} ${res.statusText}`.trim(),
        });
        err.fromServer = true;
        throw err;
      }
      return data;
    }

    emit(name, detail) {
      this.dispatchEvent(new CustomEvent(`buktor:${name}`, { detail, bubbles: true, composed: true }));
    }

    /**
     * Builds the shadow root: style, a polite live region and the content;
     * the error spot goes first unless the content placed it.
     */
    frame(...content) {
      this.live = h('div', { class: 'sr', 'aria-live': 'polite', role: 'status' });
      const box = h('div', { class: 'w', part: 'container', lang: this.lang }, this.live, ...content);
      if (!box.contains(this.errorSpot)) this.live.after(this.errorSpot);
      this.shadowRoot.replaceChildren(h('style', {}, CSS), box);
    }

    /** Tells screen-reader users about a change they did not cause directly. */
    announce(msg) {
      // Clear first so the same message twice is still read out.
      this.live.textContent = '';
      setTimeout(() => { this.live.textContent = msg; }, 50);
    }

    /**
     * Shows an error (role=alert, data-code = the problem's code) and tells
     * the host page. A fresh element each time, so screen readers announce it.
     */
    fail(e) {
      const err = e instanceof ApiError ? e : new ApiError({ code: 'ERROR', detail: String((e && e.message) || e) });
      if (e && !(e instanceof ApiError)) console.error(e); // a bug of ours: keep the stack for whoever debugs
      const known = err.fromServer && this.t.codes[err.code];
      const box = h('div', { testid: 'error', role: 'alert', class: 'err', part: 'error', 'data-code': err.code },
        known ? [h('strong', {}, known), ' ', h('span', { class: 'small' }, err.detail)] : err.detail);
      this.errorSpot.replaceChildren(box);
      box.scrollIntoView({ block: 'nearest' });
      this.emit('error', { code: err.code, detail: err.detail });
    }

    clearError() { if (this.errorSpot) this.errorSpot.replaceChildren(); }

    // ---- time: hospital-local wall time, plus the patient's own when it differs

    /** Formats a slot's start as the hospital's wall clock shows it. */
    hospitalTime(start, localStart, opts) {
      if (this.tz) return fmt(this.lang, { ...opts, timeZone: this.tz }, new Date(start));
      // No time zone known (the manage page has none): the API's localStart is
      // the wall time; formatting it as if it were UTC prints it unchanged.
      if (LOCAL_RE.test(localStart || '')) return fmt(this.lang, { ...opts, timeZone: 'UTC' }, new Date(`${localStart.slice(0, 16)}:00Z`));
      return fmt(this.lang, opts, new Date(start));
    }

    /** The patient's own time of an instant, or null when it reads the same as the hospital's. */
    ownTime(start, localStart, opts) {
      const full = { weekday: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit' };
      if (this.hospitalTime(start, localStart, full) === fmt(this.lang, full, new Date(start))) return null;
      return fmt(this.lang, opts, new Date(start));
    }

    /** "Monday 6 January, 09:00" (+ the patient's own time when different, with the date only if that differs too). */
    whenText(start, localStart) {
      const date = { weekday: 'long', day: 'numeric', month: 'long' };
      const time = { hour: 'numeric', minute: '2-digit', timeZoneName: 'short' };
      const text = this.hospitalTime(start, localStart, { ...date, hour: 'numeric', minute: '2-digit' });
      const sameDay = this.hospitalTime(start, localStart, date) === fmt(this.lang, date, new Date(start));
      const own = this.ownTime(start, localStart, sameDay ? time : { ...date, ...time });
      return own ? `${text} (${this.t.yourTime(own)})` : text;
    }

    /** A calendar date (YYYY-MM-DD) in words; a date has no time zone, so format it as UTC. */
    dayLabel(date, opts) { return fmt(this.lang, { ...opts, timeZone: 'UTC' }, new Date(`${date}T12:00:00Z`)); }

    slotDate(slot) {
      if (LOCAL_RE.test(slot.localStart || '')) return slot.localStart.slice(0, 10);
      return fmt('en-CA', { year: 'numeric', month: '2-digit', day: '2-digit', timeZone: this.tz || undefined }, new Date(slot.start));
    }

    // ---- slot picker: days, slots, live stream

    /** The day and slot lists; subclasses place them. onChoose(slot) is called on a click. */
    picker() {
      const t = this.t;
      this.dayList = h('div', { class: 'grid', role: 'group', 'aria-labelledby': 'days-h', tabindex: '-1', part: 'days' });
      this.slotList = h('div', { class: 'grid', role: 'group', 'aria-labelledby': 'slots-h', tabindex: '-1', part: 'slots' });
      this.earlier = h('button', { type: 'button', part: 'button', onclick: () => this.page(-1) }, t.earlier);
      this.later = h('button', { type: 'button', part: 'button', onclick: () => this.page(1) }, t.later);
      this.dayNote = h('p', { class: 'small' });
      this.slotNote = h('p', { class: 'small' });
      this.pickerBox = h('div', { class: 'pick', hidden: true },
        h('section', {}, h('h3', { id: 'days-h' }, t.day), this.dayNote, this.dayList, h('div', { class: 'row' }, this.earlier, this.later)),
        h('section', {}, h('h3', { id: 'slots-h' }, t.time), this.slotNote, this.slotList));
      this.windowStart = 0;
      return this.pickerBox;
    }

    /** {service, practitioner} to show slots for; practitioner '' = every one. Subclasses define it. */
    slotQuery() { return null; }

    slotParams() {
      const q = this.slotQuery();
      if (!q || !q.service) return null;
      const from = addDays(today(this.tz), this.windowStart * WINDOW_DAYS);
      const p = new URLSearchParams({ service: q.service });
      if (q.practitioner) p.set('practitioner', q.practitioner);
      p.set('from', from);
      p.set('to', addDays(from, WINDOW_DAYS - 1));
      return p;
    }

    /** Moves the two-week window and shows its slots. */
    page(step) {
      this.windowStart = Math.max(0, this.windowStart + step);
      this.selectedDate = null;
      this.showSlotsFresh();
    }

    /** Forgets the slots shown, loads the current query's and follows them live. */
    async showSlotsFresh() {
      this.stopStream();
      this.slotDays = new Map();
      this.pickerBox.hidden = !this.slotParams();
      this.renderPicker();
      const run = (this.freshRun = {});
      // A reload that overtook this one (a refused hold) still wants the
      // stream; a later showSlotsFresh or stopStream does not.
      if ((await this.loadSlots()) !== false && run === this.freshRun) this.startStream();
    }

    /**
     * Loads the slots of the current query with GET slots. Days the stream
     * replaced while the request was in flight keep the stream's (newer)
     * version. Returns whether it worked: true, false, or null when another
     * load overtook it.
     */
    async loadSlots() {
      const params = this.slotParams();
      if (!params) return false;
      const gen = this.gen;
      const load = (this.slotLoad = {});
      const touched = (this.touched = new Set());
      this.dayNote.textContent = this.t.loading;
      try {
        const answer = await this.api('GET', `slots?${params}`);
        if (gen !== this.gen || load !== this.slotLoad) return null;
        const fresh = new Map();
        for (const s of answer.slots || []) {
          const key = `${s.practitionerId}|${this.slotDate(s)}`;
          if (!fresh.has(key)) fresh.set(key, []);
          fresh.get(key).push(s);
        }
        for (const key of touched) fresh.set(key, this.slotDays.get(key) || []);
        this.slotDays = fresh;
        this.touched = null;
        this.renderPicker();
        return true;
      } catch (e) {
        if (gen !== this.gen || load !== this.slotLoad) return null;
        this.touched = null; this.dayNote.textContent = ''; this.fail(e);
        return false;
      }
    }

    /**
     * Follows GET slots/stream: each `event: day` replaces one
     * practitioner-day. On an error or the end of the stream it reconnects
     * with exponential backoff (with jitter, so a restarted server is not hit
     * by every open widget at the same moment); the server resends every day
     * on connect, so nothing missed in between is lost.
     */
    async startStream() {
      const params = this.slotParams();
      if (!params) return;
      const run = (this.streamRun = { ctl: null });
      let delay = 1000;
      while (this.streamRun === run) {
        const ctl = (run.ctl = new AbortController());
        try {
          const headers = { Accept: 'text/event-stream' };
          if (this.auth) headers.Authorization = this.auth;
          const res = await fetch(`${this.apiBase}/widget/v1/${encodeURIComponent(this.tenant)}/slots/stream?${params}`,
            { headers, signal: ctl.signal, credentials: 'omit', cache: 'no-store' });
          // Refused for good (bad session, booking disabled): retrying would not help.
          if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) return;
          if (!res.ok || !res.body) throw new Error(`slots/stream answered ${res.status}`);
          await readEventStream(res.body, (type, data) => {
            if (this.streamRun !== run || type !== 'day') return;
            delay = 1000;
            try { this.applyDay(JSON.parse(data)); } catch (e) { console.warn('buktor: bad day event', e); }
          });
        } catch (e) {
          if (ctl.signal.aborted) return;
        }
        if (this.streamRun !== run) return;
        await sleep(delay * (1 + Math.random() / 2));
        delay = Math.min(delay * 2, 30000);
      }
    }

    stopStream() {
      const run = this.streamRun;
      this.streamRun = null;
      this.freshRun = null;
      if (run && run.ctl) run.ctl.abort();
    }

    /** One practitioner-day from the stream replaces what we had for it. */
    applyDay(day) {
      const q = this.slotQuery();
      if (!q || (q.practitioner && day.practitionerId !== q.practitioner)) return;
      const key = `${day.practitionerId}|${day.date}`;
      if (this.touched) this.touched.add(key);
      const before = this.visibleStarts();
      this.slotDays.set(key, day.slots || []);
      this.renderPicker();
      if (day.date === this.selectedDate && before !== this.visibleStarts()) this.announce(this.t.slotsUpdated);
    }

    /** The slots to show on a date: sorted; with "first available", one per start time. */
    slotsOn(date) {
      const order = this.practitionerOrder || [];
      const rank = (id) => { const i = order.indexOf(id); return i < 0 ? order.length : i; };
      const byStart = new Map();
      for (const [key, slots] of this.slotDays) {
        if (!key.endsWith(`|${date}`)) continue;
        for (const s of slots) {
          const had = byStart.get(s.start);
          // Same time with several practitioners: offer the first in the hospital's order.
          if (!had || rank(s.practitionerId) < rank(had.practitionerId)) byStart.set(s.start, s);
        }
      }
      return [...byStart.values()].sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    }

    visibleStarts() { return this.selectedDate ? this.slotsOn(this.selectedDate).map((s) => s.start).join() : ''; }

    renderPicker() {
      if (!this.dayList) return;
      const t = this.t;
      const params = this.slotParams();
      const from = params && params.get('from');
      const to = params && params.get('to');
      const dates = new Set();
      for (const [key, slots] of this.slotDays) {
        const date = key.slice(key.lastIndexOf('|') + 1);
        if (slots.length && date >= from && date <= to) dates.add(date);
      }
      // Pick the first day with free time, so the patient sees times at once.
      if (!this.selectedDate || (!dates.has(this.selectedDate) && (this.selectedDate < from || this.selectedDate > to))) {
        this.selectedDate = [...dates].sort()[0] || null;
      }
      // The chosen day stays even when its last slot goes, with a note why it is empty.
      if (this.selectedDate) dates.add(this.selectedDate);
      this.earlier.disabled = this.windowStart === 0;
      this.dayNote.textContent = dates.size ? '' : t.noDays;
      syncList(this.dayList, [...dates].sort().map((date) => ({
        key: date,
        make: () => h('button', { type: 'button', class: 'day', testid: 'day', part: 'day', 'data-date': date,
          onclick: () => this.chooseDay(date) }),
        update: (el) => {
          el.setAttribute('aria-pressed', String(date === this.selectedDate));
          fill(el, h('span', { class: 'small' }, this.dayLabel(date, { weekday: 'short' })),
            h('span', { class: 'd' }, this.dayLabel(date, { day: 'numeric', month: 'short' })));
          el.setAttribute('aria-label', this.dayLabel(date, { weekday: 'long', day: 'numeric', month: 'long' }));
        },
      })));
      this.renderSlots();
    }

    renderSlots() {
      const slots = this.selectedDate ? this.slotsOn(this.selectedDate) : [];
      const q = this.slotQuery() || {};
      const names = this.practitionerNames || new Map();
      const short = { hour: 'numeric', minute: '2-digit' };
      this.slotNote.textContent = this.selectedDate && !slots.length ? this.t.noSlots : '';
      // Not disabled while a hold is being placed: that would drop the keyboard focus (clicks are ignored instead).
      this.slotList.setAttribute('aria-busy', String(!!this.busy));
      syncList(this.slotList, slots.map((s) => ({
        key: `${s.practitionerId}|${s.start}`,
        make: () => h('button', { type: 'button', class: 'slot', testid: 'slot', part: 'slot', 'data-start': s.start,
          'data-practitioner': s.practitionerId, onclick: () => this.chooseSlot(s) }),
        update: (el) => {
          const held = this.hold && sameSlot(this.hold.slot, s);
          const time = this.hospitalTime(s.start, s.localStart, short);
          const own = this.ownTime(s.start, s.localStart, { ...short, timeZoneName: 'short' });
          const who = q.practitioner ? null : names.get(s.practitionerId);
          el.setAttribute('aria-pressed', String(!!held));
          el.setAttribute('part', held ? 'slot slot-held' : 'slot');
          fill(el, h('span', { class: 't' }, time),
            own && h('span', { class: 'small' }, this.t.yourTime(own)), who && h('span', { class: 'small' }, who));
        },
      })));
    }

    chooseDay(date) {
      this.selectedDate = date;
      this.renderPicker();
      this.announce(`${this.dayLabel(date, { weekday: 'long', day: 'numeric', month: 'long' })}: ${this.t.daySlots(this.slotsOn(date).length)}`);
    }

    // ---- holds

    /**
     * Choosing a slot holds it on the server (offered to nobody else until it
     * expires); the previous hold, if any, is released first.
     */
    async chooseSlot(slot) {
      if (this.busy || (this.hold && sameSlot(this.hold.slot, slot))) return;
      const q = this.slotQuery();
      this.clearError();
      this.releaseHold();
      this.busy = this.holding = true;
      this.holdChanged();
      this.setHoldText(this.t.holding);
      const gen = this.gen;
      try {
        const r = await this.api('POST', 'holds', { body: { practitionerId: slot.practitionerId, serviceId: q.service, start: slot.start } });
        if (gen !== this.gen) return;
        this.startHold(r, slot);
        this.emit('slot-held', { holdId: r.holdId, start: slot.start, expiresAt: r.expiresAt });
      } catch (e) {
        if (gen !== this.gen) return;
        this.fail(e);
        if (e.code === 'SLOT_TAKEN') this.loadSlots();
      } finally {
        if (gen === this.gen) { this.busy = this.holding = false; this.holdChanged(); }
      }
    }

    startHold(r, slot) {
      const now = Date.now();
      const serverMs = Date.parse(r.expiresAt) - now;
      const holdMs = (this.holdMinutes || 0) * 60000;
      // The countdown runs on this device's clock. Trust the server's expiry
      // unless the two clocks clearly disagree; then count the hold's length.
      const ms = !Number.isFinite(serverMs) ? holdMs : holdMs && Math.abs(serverMs - holdMs) > 30000 ? holdMs : serverMs;
      this.hold = { id: r.holdId, slot, deadline: now + ms, warned: ms <= 60000 };
      this.hold.timer = setInterval(() => this.tick(), 1000);
      this.holdChanged();
      this.tick();
    }

    tick() {
      const hold = this.hold;
      if (!hold) return;
      const left = Math.max(0, Math.ceil((hold.deadline - Date.now()) / 1000));
      const mmss = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
      if (this.countdown) fill(this.countdown, `${this.t.heldFor} `, h('strong', {}, mmss));
      if (left <= 60 && !hold.warned) { hold.warned = true; this.announce(this.t.oneMinute); }
      if (left === 0) {
        // The server let the hold go at the same moment: say so and show what is free now.
        this.dropHold();
        this.fail(new ApiError({ code: 'HOLD_EXPIRED', detail: this.t.holdExpired }));
        this.loadSlots();
      }
    }

    /** Forgets the hold here without telling the server (it expired or became the booking). */
    dropHold() {
      if (!this.hold) return;
      clearInterval(this.hold.timer);
      this.hold = null;
      this.setHoldText('');
      this.holdChanged();
    }

    /** Gives the held slot back to everyone else. */
    releaseHold(leaving = false) {
      const hold = this.hold;
      if (!hold) return;
      this.dropHold();
      // keepalive: the request outlives the element when the page goes away.
      // A lost release is harmless: the hold expires by itself.
      this.api('DELETE', `holds/${encodeURIComponent(hold.id)}`, { keepalive: leaving }).catch(() => {});
    }

    setHoldText(text) { if (this.countdown) this.countdown.textContent = text; }

    /** Called when a hold starts or ends; subclasses show or hide what follows a hold. */
    holdChanged() { this.renderSlots(); }
  }

  // -------------------------------------------------------- <buktor-booking>
  class BuktorBooking extends Base {
    static get observedAttributes() { return ['tenant', 'service', 'practitioner', 'lang', 'mode', 'embed-token', 'api-base']; }

    async start(gen) {
      const t = this.t;
      this.clearError();
      this.frame((this.loading = h('p', {}, t.loading)));
      this.hold = null;
      this.patient = null;
      if (!this.tenant) throw new ApiError({ code: 'TENANT_MISSING', detail: t.noTenant });
      const staff = (this.getAttribute('mode') || 'patient').trim() === 'staff';
      this.auth = null;
      if (staff) {
        const token = (this.getAttribute('embed-token') || '').trim();
        if (!token) throw new ApiError({ code: 'TOKEN_MISSING', detail: t.noToken });
        // Embed tokens live minutes and the session hours: reuse the session
        // when only another attribute (lang, service…) changed.
        const cacheKey = `${this.apiBase} ${this.tenant} ${token}`;
        if (!this.session || this.session.cacheKey !== cacheKey) {
          this.session = null;
          const s = await this.api('POST', '/embed/v1/session', { body: { token }, auth: null });
          if (gen !== this.gen) return;
          this.session = { cacheKey, key: s.session };
        }
        this.auth = `Bearer ${this.session.key}`;
      }
      const cfg = await this.api('GET', 'config');
      if (gen !== this.gen) return;
      this.cfg = cfg;
      this.tz = cfg.tenant && cfg.tenant.timeZone;
      this.holdMinutes = cfg.holdMinutes;
      this.staff = cfg.mode === 'staff';
      if (!this.staff && cfg.patientBooking === false) {
        throw new ApiError({ code: 'PATIENT_BOOKING_DISABLED', detail: t.disabled });
      }
      this.practitionerOrder = (cfg.practitioners || []).map((p) => p.id);
      this.practitionerNames = new Map((cfg.practitioners || []).map((p) => [p.id, p.name]));
      this.render();
      this.emit('ready', { tenant: this.tenant, mode: cfg.mode });
    }

    render() {
      const t = this.t;
      const cfg = this.cfg;
      const services = cfg.services || [];

      // Services grouped by the specialty of their practitioners ("choose
      // specialty/service" in one select): a service whose practitioners
      // share one specialty goes under it.
      const specialty = new Map((cfg.practitioners || []).map((p) => [p.id, p.specialty]));
      const groups = new Map();
      for (const s of services) {
        const kinds = [...new Set((s.practitionerIds || []).map((id) => specialty.get(id)).filter(Boolean))];
        const label = kinds.length === 1 ? kinds[0] : '';
        if (!groups.has(label)) groups.set(label, []);
        groups.get(label).push(s);
      }
      const option = (s) => h('option', { value: s.id }, s.durationMinutes ? `${s.name} (${t.minutes(s.durationMinutes)})` : s.name);
      const wanted = (this.getAttribute('service') || '').trim();
      this.serviceSel = h('select', { testid: 'service', id: 'service', part: 'select', onchange: () => this.serviceChanged() },
        h('option', { value: '' }, t.chooseService),
        [...groups].map(([label, list]) => (label && groups.size > 1 ? h('optgroup', { label }, list.map(option)) : list.map(option))));
      this.serviceSel.value = services.some((s) => s.id === wanted) ? wanted : services.length === 1 ? services[0].id : '';
      this.practitionerSel = h('select', { testid: 'practitioner', id: 'practitioner', part: 'select', onchange: () => this.queryChanged() });

      this.countdown = h('p', { testid: 'hold-countdown', class: 'countdown', role: 'timer', part: 'countdown' });
      this.summary = h('p', { class: 'summary' });
      this.confirmBtn = h('button', { type: 'submit', class: 'primary', testid: 'confirm', part: 'button confirm' }, t.confirm);
      this.form = h('form', { onsubmit: (e) => { e.preventDefault(); this.confirm(); } },
        this.staff ? null : this.detailsFields(), h('div', { class: 'row' }, this.confirmBtn));
      this.holdBox = h('section', { class: 'box', part: 'hold', 'aria-labelledby': 'hold-h', hidden: true },
        h('h3', { id: 'hold-h', tabindex: '-1' }, t.yourAppointment), this.summary, this.countdown, this.form);
      this.done = h('div');

      this.main = h('div', { class: 'stack' },
        this.staff ? this.staffFields() : null,
        h('div', { class: 'fields' },
          field(t.service, this.serviceSel),
          field(t.practitioner, this.practitionerSel)),
        this.picker(), this.errorSpot, this.holdBox);
      this.frame(
        h('header', { part: 'header' }, h('h2', { part: 'title' }, t.title),
          h('p', { class: 'small' }, [cfg.tenant && cfg.tenant.name, this.tz && t.hospitalTime(this.tz)].filter(Boolean).join(' · '))),
        this.main, this.done);
      this.fillPractitioners();
      this.showSlotsFresh();
    }

    detailsFields() {
      const t = this.t;
      const input = (id, type, autocomplete, label, extra) => field(label,
        h('input', { id, testid: `patient-${id}`, name: id, type, autocomplete, part: 'input', ...extra }));
      const box = h('fieldset', { style: 'border:0;padding:0;margin:0;display:grid;gap:.8rem' },
        h('legend', { style: 'font-weight:700;padding:0;margin-bottom:.5rem' }, t.yourDetails),
        h('div', { class: 'fields' },
          input('name', 'text', 'name', t.name, { required: true, maxlength: 200 }),
          input('email', 'email', 'email', t.email, { 'aria-describedby': 'contact-hint' }),
          input('phone', 'tel', 'tel', t.phone, { 'aria-describedby': 'contact-hint' })),
        h('p', { class: 'small', id: 'contact-hint' }, t.contactHint));
      // Email or phone: a rule the browser's own validation can show and read out.
      const [email, phone] = [box.querySelector('#email'), box.querySelector('#phone')];
      const rule = () => email.setCustomValidity(email.value.trim() || phone.value.trim() ? '' : t.contactNeeded);
      email.addEventListener('input', rule);
      phone.addEventListener('input', rule);
      rule();
      this.fields = { name: box.querySelector('#name'), email, phone };
      return box;
    }

    staffFields() {
      const t = this.t;
      this.hisInput = h('input', { id: 'his', testid: 'his-patient-id', part: 'input', autocomplete: 'off', required: true,
        oninput: () => { this.hisInput.setCustomValidity(''); } });
      this.found = h('p', { testid: 'patient-found', class: 'box', part: 'patient', hidden: true, 'aria-live': 'polite' });
      return h('section', { 'aria-labelledby': 'pat-h' }, h('h3', { id: 'pat-h' }, t.patient),
        h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); this.findPatient(); } },
          field(t.hisPatientId, this.hisInput),
          h('button', { type: 'submit', testid: 'find-patient', part: 'button' }, t.findPatient)),
        this.found);
    }

    async findPatient() {
      const id = this.hisInput.value.trim();
      this.patient = null;
      this.found.hidden = true;
      this.clearError();
      if (!id) { this.hisInput.reportValidity(); return; }
      const gen = this.gen;
      try {
        const p = await this.api('GET', `patients/${encodeURIComponent(id)}`);
        if (gen !== this.gen) return;
        this.patient = { ...p, hisPatientId: p.hisPatientId || id };
        fill(this.found, h('strong', {}, p.name || id), ' ',
          h('span', { class: 'small' }, [`${this.t.hisPatientId}: ${this.patient.hisPatientId}`, p.email, p.phone].filter(Boolean).join(' · ')));
        this.found.hidden = false;
      } catch (e) {
        if (gen === this.gen) this.fail(e);
      }
    }

    fillPractitioners() {
      const t = this.t;
      const service = (this.cfg.services || []).find((s) => s.id === this.serviceSel.value);
      const ids = service ? service.practitionerIds || [] : [];
      const list = (this.cfg.practitioners || []).filter((p) => ids.includes(p.id));
      const keep = this.practitionerSel.value || (this.getAttribute('practitioner') || '').trim();
      fill(this.practitionerSel, h('option', { value: '' }, t.firstAvailable),
        list.map((p) => h('option', { value: p.id }, p.specialty ? `${p.name} (${p.specialty})` : p.name)));
      this.practitionerSel.value = list.some((p) => p.id === keep) ? keep : '';
      this.practitionerSel.disabled = !service;
    }

    slotQuery() {
      if (!this.serviceSel || !this.serviceSel.value) return null;
      return { service: this.serviceSel.value, practitioner: this.practitionerSel.value };
    }

    serviceChanged() { this.fillPractitioners(); this.queryChanged(); }

    queryChanged() {
      this.clearError();
      this.releaseHold();
      this.windowStart = 0;
      this.selectedDate = null;
      this.showSlotsFresh();
    }

    holdChanged() {
      super.holdChanged();
      if (!this.holdBox) return;
      const hold = this.hold;
      this.holdBox.hidden = !hold && !this.holding;
      this.form.hidden = !hold;
      if (hold) {
        const who = this.practitionerNames.get(hold.slot.practitionerId);
        const service = (this.cfg.services || []).find((s) => s.id === this.serviceSel.value);
        this.summary.textContent = [this.whenText(hold.slot.start, hold.slot.localStart), service && service.name, who && this.t.with(who)]
          .filter(Boolean).join(' · ');
        // Keyboard and screen-reader users continue where the next step is.
        const next = this.staff ? (this.patient ? this.confirmBtn : this.hisInput) : this.fields.name;
        if (next && this.pickerBox.contains(this.shadowRoot.activeElement)) next.focus({ preventScroll: true });
        this.holdBox.scrollIntoView({ block: 'nearest' });
      } else {
        this.summary.textContent = '';
      }
    }

    /** Turns the hold into the booking. */
    async confirm() {
      const hold = this.hold;
      if (!hold || this.busy) return;
      const t = this.t;
      let patient;
      if (this.staff) {
        if (!this.patient || this.patient.hisPatientId !== this.hisInput.value.trim()) {
          this.hisInput.setCustomValidity(t.findFirst);
          this.hisInput.reportValidity();
          return;
        }
        const { hisPatientId, name, email, phone } = this.patient;
        patient = { hisPatientId, name, email, phone };
      } else {
        if (!this.form.reportValidity()) return;
        const v = (el) => el.value.trim() || undefined;
        patient = { name: v(this.fields.name), email: v(this.fields.email), phone: v(this.fields.phone) };
      }
      this.clearError();
      this.busy = true;
      this.confirmBtn.disabled = true;
      this.confirmBtn.textContent = t.booking;
      const gen = this.gen;
      try {
        const language = (this.staff && this.patient.language) || this.lang;
        const r = await this.api('POST', 'bookings', { body: { holdId: hold.id, patient, language } });
        if (gen !== this.gen) return;
        this.dropHold(); // the hold became this booking
        this.stopStream();
        this.showBooked(r, hold.slot);
        this.emit('booked', { appointmentId: r.appointmentId, start: r.start, end: r.end,
          practitionerId: (r.practitioner && r.practitioner.id) || hold.slot.practitionerId,
          serviceId: (r.service && r.service.id) || this.serviceSel.value });
      } catch (e) {
        if (gen !== this.gen) return;
        this.fail(e);
        // Lost the race: the hold is gone, so show what is free now.
        if (e.code === 'SLOT_TAKEN' || e.code === 'HOLD_EXPIRED') { this.dropHold(); this.loadSlots(); }
      } finally {
        if (gen === this.gen) {
          this.busy = false;
          this.confirmBtn.disabled = false;
          this.confirmBtn.textContent = t.confirm;
        }
      }
    }

    showBooked(r, slot) {
      const t = this.t;
      const href = r.manageUrl ? new URL(r.manageUrl, `${this.apiBase}/`).href : null;
      const who = (r.practitioner && r.practitioner.name) || this.practitionerNames.get(slot.practitionerId);
      const title = h('h3', { tabindex: '-1' }, t.booked);
      const bookedFor = this.staff && this.patient && this.patient.name;
      this.main.hidden = true;
      fill(this.done, h('section', { testid: 'confirmation', class: 'box ok', part: 'confirmation', 'data-appointment': r.appointmentId },
        title,
        h('p', {}, h('strong', {}, this.whenText(r.start || slot.start, r.localStart || slot.localStart))),
        h('p', {}, [r.service && r.service.name, who && t.with(who)].filter(Boolean).join(' · ')),
        bookedFor && h('p', {}, t.bookedFor(bookedFor)),
        href && h('p', {}, h('a', { testid: 'manage-link', part: 'manage-link', href, target: '_blank', rel: 'noopener' }, t.manage)),
        h('div', { class: 'row' }, h('button', { type: 'button', part: 'button', onclick: () => this.bookAnother() }, t.bookAnother))));
      title.focus({ preventScroll: true });
      title.scrollIntoView({ block: 'nearest' });
    }

    bookAnother() {
      this.done.replaceChildren();
      this.main.hidden = false;
      this.clearError();
      this.selectedDate = null;
      this.showSlotsFresh();
    }
  }

  // --------------------------------------------------------- <buktor-manage>
  /**
   * The patient's own appointment, reached with the manage token from the
   * confirmation: see it, cancel it, or move it (hold a new slot, then
   * reschedule onto that hold).
   */
  class BuktorManage extends Base {
    static get observedAttributes() { return ['tenant', 'token', 'lang', 'api-base']; }

    async start(gen) {
      const t = this.t;
      this.clearError();
      this.frame((this.loading = h('p', {}, t.loading)));
      this.hold = null;
      if (!this.tenant) throw new ApiError({ code: 'TENANT_MISSING', detail: t.noTenant });
      const token = (this.getAttribute('token') || '').trim();
      if (!token) throw new ApiError({ code: 'TOKEN_MISSING', detail: t.noToken2 });
      this.auth = `Manage ${token}`;
      const appt = await this.api('GET', 'manage');
      if (gen !== this.gen) return;
      this.render(appt);
      this.emit('ready', { tenant: this.tenant, mode: 'manage' });
    }

    render(appt) {
      const t = this.t;
      this.appt = appt;
      // Not in the contract's answer, but sent by the server: use it when there (localStart covers its absence).
      if (appt.timeZone) this.tz = appt.timeZone;
      const status = normStatus(appt.status);
      const open = status === 'booked' && Date.parse(appt.start) > Date.now();
      this.statusEl = h('strong', { testid: 'manage-status', part: 'status', 'data-status': status }, t.statuses[status] || status);
      this.reason = h('input', { id: 'reason', part: 'input', maxlength: 500 });
      this.countdown = h('p', { testid: 'hold-countdown', class: 'countdown', role: 'timer', part: 'countdown' });
      this.moveBtn = h('button', { type: 'button', class: 'primary', testid: 'confirm', part: 'button confirm', onclick: () => this.reschedule() });
      this.holdBox = h('div', { class: 'box', part: 'hold', hidden: true }, this.countdown, h('div', { class: 'row' }, this.moveBtn));
      const moveArea = h('div', { class: 'stack', hidden: true }, this.picker(), this.holdBox);
      this.frame(
        h('header', { part: 'header' }, h('h2', { part: 'title' }, t.manageTitle)),
        (this.apptBox = h('section', { class: 'box', part: 'appointment', 'data-appointment': appt.appointmentId, tabindex: '-1' },
          h('p', {}, h('strong', {}, this.whenText(appt.start, appt.localStart))),
          h('p', {}, [appt.service && appt.service.name, appt.practitioner && t.with(appt.practitioner.name)].filter(Boolean).join(' · ')),
          appt.patientName && h('p', {}, appt.patientName),
          h('p', {}, `${t.status}: `, this.statusEl))),
        this.errorSpot,
        open && h('section', {},
          field(t.reason, this.reason),
          h('div', { class: 'row' },
            h('button', { type: 'button', testid: 'manage-cancel', part: 'button', onclick: () => this.cancel() }, t.cancel),
            h('button', { type: 'button', part: 'button', 'aria-expanded': 'false',
              onclick: (e) => {
                moveArea.hidden = !moveArea.hidden;
                e.currentTarget.setAttribute('aria-expanded', String(!moveArea.hidden));
                if (moveArea.hidden) { this.releaseHold(); this.stopStream(); } else this.showSlotsFresh();
              } }, t.reschedule))),
        open && moveArea);
    }

    slotQuery() {
      const a = this.appt;
      return a && a.service ? { service: a.service.id, practitioner: a.practitioner && a.practitioner.id } : null;
    }

    holdChanged() {
      super.holdChanged();
      if (!this.holdBox) return;
      this.holdBox.hidden = !this.hold;
      if (this.hold) this.moveBtn.textContent = this.t.moveTo(this.whenText(this.hold.slot.start, this.hold.slot.localStart));
    }

    async act(path, body, doneText, event) {
      if (this.busy) return;
      this.busy = true;
      this.clearError();
      const gen = this.gen;
      try {
        const appt = await this.api('POST', path, { body });
        if (gen !== this.gen) return;
        this.dropHold();
        this.stopStream();
        // Moving the appointment gives a new manage token (the old one ends at the old start).
        if (appt.manageToken) {
          this.auth = `Manage ${appt.manageToken}`;
          if (this.onToken) this.onToken(appt.manageToken);
        }
        this.render(appt);
        // The page was rebuilt: put the focus (and the screen reader) on the changed appointment.
        this.apptBox.focus();
        this.announce(doneText);
        this.emit(event, { appointmentId: appt.appointmentId, start: appt.start, end: appt.end, status: normStatus(appt.status) });
      } catch (e) {
        if (gen !== this.gen) return;
        this.fail(e);
        if (e.code === 'SLOT_TAKEN' || e.code === 'HOLD_EXPIRED') { this.dropHold(); this.loadSlots(); }
      } finally {
        if (gen === this.gen) this.busy = false;
      }
    }

    cancel() { this.act('manage/cancel', { reason: this.reason.value.trim() || undefined }, this.t.cancelled, 'cancelled'); }

    reschedule() { if (this.hold) this.act('manage/reschedule', { holdId: this.hold.id }, this.t.rescheduled, 'rescheduled'); }
  }

  customElements.define('buktor-booking', BuktorBooking);
  customElements.define('buktor-manage', BuktorManage);

  // ------------------------------------------------------ whole-page frames
  // frame.html and manage.html load this script with data-buktor-page; the
  // page logic lives here rather than in an inline script so the pages work
  // under a strict Content-Security-Policy.
  const page = SCRIPT && SCRIPT.dataset.buktorPage;
  if (page) {
    const start = () => {
      // /widget/v1/{tenant}/frame or /widget/v1/{tenant}/manage
      const parts = location.pathname.split('/').filter(Boolean);
      const tenant = decodeURIComponent(parts[parts.length - 2] || '');
      const query = new URLSearchParams(location.search);
      let token = new URLSearchParams(location.hash.slice(1)).get('token');
      // Tokens leave the address bar and history once read (nobody reads them
      // off a screen or a shared screenshot). The manage token is kept for this
      // tab only, so a reload still works; the patient's link has it for later.
      if (location.hash) history.replaceState(null, '', location.pathname + location.search);
      const remember = (t) => { try { sessionStorage.setItem(`buktor-manage:${tenant}`, t); } catch { /* storage blocked: no reload then */ } };
      if (page === 'manage') {
        if (token) remember(token);
        else try { token = sessionStorage.getItem(`buktor-manage:${tenant}`); } catch { /* as above */ }
      }
      const el = document.createElement(page === 'manage' ? 'buktor-manage' : 'buktor-booking');
      el.setAttribute('tenant', tenant);
      el.setAttribute('api-base', location.origin);
      const lang = query.get('lang');
      if (lang) { el.setAttribute('lang', lang); document.documentElement.lang = lang; }
      if (page === 'manage') {
        if (token) el.setAttribute('token', token);
        el.onToken = remember;
        // Another manage link opened in this tab only changes the fragment: no new page load.
        window.addEventListener('hashchange', () => {
          const next = new URLSearchParams(location.hash.slice(1)).get('token');
          if (!next) return;
          history.replaceState(null, '', location.pathname + location.search);
          remember(next);
          el.setAttribute('token', next);
        });
      } else {
        for (const name of ['service', 'practitioner', 'mode']) if (query.get(name)) el.setAttribute(name, query.get(name));
        if (token) el.setAttribute('embed-token', token);
      }
      // Relay the element's events to the embedding page, which may be on any
      // origin ('*'): so without secrets. The hold id is a signed token that
      // can book or release the hold, so it stays in the frame; the rest are
      // ids and times.
      if (window.parent !== window) {
        for (const name of EVENTS) {
          el.addEventListener(`buktor:${name}`, (e) => {
            const { holdId, ...detail } = e.detail || {};
            window.parent.postMessage({ type: e.type, detail }, '*');
          });
        }
        // Lets the parent size the iframe to the content (no scrollbars on a phone).
        new ResizeObserver(() => window.parent.postMessage({ type: 'buktor:resize', detail: { height: document.documentElement.scrollHeight } }, '*'))
          .observe(document.body);
      }
      document.body.append(el);
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
    else start();
  }
})();
