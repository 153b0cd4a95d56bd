// The hospital's own web pages, as test host pages: node serves them itself on
// 127.0.0.1 and a random port, so their origin differs from the Buktor server's.
// Two servers make two origins: one the hospital allows, one it does not.
//
//   GET /widget?server=…&attr.tenant=…&attr.service=…   a page embedding the
//       web component with one <script> tag; every `attr.NAME` query
//       parameter becomes an attribute of <buktor-booking>. The page records
//       every buktor:* DOM event in window.__buktorEvents.
//   GET /frame?src=…   a page with one <iframe id="buktor" src="…"> (an admin
//       screen or the widget's iframe page); records the iframe's load events
//       and the messages the framed page posts (window.__messages).
import http from 'node:http';

const EVENT_TYPES = [
  'buktor:ready',
  'buktor:slot-held',
  'buktor:booked',
  'buktor:cancelled',
  'buktor:rescheduled',
  'buktor:error',
];

function escapeHtml(s) {
  return String(s)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function widgetPage(params, label) {
  const server = params.get('server');
  const attrs = [];
  for (const [k, v] of params) {
    if (k.startsWith('attr.')) attrs.push(`${escapeHtml(k.slice(5))}="${escapeHtml(v)}"`);
  }
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(label)} hospital: book an appointment</title>
<script>
  // Everything the widget tells the host page, in order.
  window.__buktorEvents = [];
  for (const type of ${JSON.stringify(EVENT_TYPES)}) {
    document.addEventListener(type, (e) => {
      window.__buktorEvents.push({
        type: e.type,
        detail: e.detail === undefined ? null : JSON.parse(JSON.stringify(e.detail)),
        target: e.target && e.target.tagName ? e.target.tagName.toLowerCase() : null,
        bubbles: e.bubbles,
        composed: e.composed,
      });
    });
  }
</script>
<script src="${escapeHtml(server)}/widget/v1/buktor-booking.js"></script>
<style>
  body { font-family: sans-serif; margin: 0; background: #f4f1ea; }
  header { background: #2c4a6e; color: white; padding: 12px 20px; }
  main { max-width: 720px; margin: 20px auto; background: white; padding: 16px; }
</style>
</head>
<body>
<header><strong>${escapeHtml(label)} hospital</strong> — patient portal (test host page)</header>
<main>
  <h1>Book an appointment</h1>
  <buktor-booking ${attrs.join(' ')}></buktor-booking>
</main>
</body>
</html>
`;
}

function framePage(params, label) {
  const src = params.get('src');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(label)} HIS</title>
<style>
  body { font-family: sans-serif; margin: 0; background: #eef2f5; }
  header { background: #444; color: white; padding: 10px 16px; }
  iframe { display: block; border: 1px solid #888; margin: 12px; width: calc(100% - 24px); height: 760px; background: white; }
</style>
</head>
<body>
<header><strong>${escapeHtml(label)} HIS</strong> — Buktor embedded below</header>
<iframe id="buktor" title="Buktor" src="${escapeHtml(src)}"></iframe>
<script>
  window.__frameLoads = 0;
  document.getElementById('buktor').addEventListener('load', () => { window.__frameLoads += 1; });
  // What the framed page posts to its parent (the widget's iframe page relays its events).
  window.__messages = [];
  window.addEventListener('message', (e) => {
    window.__messages.push({ origin: e.origin, data: JSON.parse(JSON.stringify(e.data)) });
  });
</script>
</body>
</html>
`;
}

/** Starts one host server; resolves to {origin, close}. */
export function startHost(label) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://host');
    let body;
    if (url.pathname === '/widget') body = widgetPage(url.searchParams, label);
    else if (url.pathname === '/frame') body = framePage(url.searchParams, label);
    else if (url.pathname === '/') body = `<!doctype html><title>${escapeHtml(label)}</title><p>${escapeHtml(label)} host</p>`;
    if (body === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        origin: `http://127.0.0.1:${port}`,
        close: () => new Promise((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
      });
    });
  });
}

/** The URL of a host page embedding the widget with these attributes. */
export function widgetHostUrl(origin, server, attrs) {
  const q = new URLSearchParams({ server });
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) q.set(`attr.${k}`, v);
  }
  return `${origin}/widget?${q}`;
}

/** The URL of a host page framing `src`. */
export function frameHostUrl(origin, src) {
  return `${origin}/frame?${new URLSearchParams({ src })}`;
}
