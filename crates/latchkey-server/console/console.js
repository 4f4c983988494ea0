// The latchkey web console: a client of the admin API (/admin/v1) and nothing else.
//
// It signs in at the token endpoint with an admin client's ID and secret and keeps the access
// token in `session` (this page's memory only: never storage, a cookie or the URL). Every
// fetch uses `credentials: 'omit'`: the server answers a 401 with `WWW-Authenticate: Basic`,
// which would otherwise make the browser show its own login prompt.
//
// All text from the server is rendered with textContent (through `h()`), never as HTML:
// client names and audit details are chosen by whoever registered the client.
'use strict';

// Where the server's root is: the console lives at ROOT + 'console/', which is '/' or the
// issuer's path (such as '/auth/').
const ROOT = location.pathname.replace(/console\/[^/]*$/, '');
const ADMIN_SCOPE = 'latchkey:admin';
const ADMIN_READ_SCOPE = 'latchkey:admin:read';
const PAGE_SIZE = 50;
const HOUR = 3600;
const DAY = 24 * HOUR;

/** The signed-in session; `token` is null when signed out. */
const session = { token: null, clientId: '', name: '', canWrite: false, expiresAt: 0, timer: 0 };

/** Each navigation bumps this; a page's late answers are dropped once it changed. */
let view = 0;

/** The clients list's state, kept across visits: the filter and the stack of page cursors. */
const clientList = { name: '', after: '', previous: [] };

// ---------------------------------------------------------------------------------------
// DOM helpers

/**
 * An element: `props` are attributes ('class', 'text' for textContent, `on*` for listeners;
 * true for a bare attribute, null/false/undefined left out); children are nodes or strings
 * (as text), nested arrays flattened, null skipped.
 */
function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, like `h`. */
function s(tag, props, ...children) {
  return build(document.createElementNS('http://www.w3.org/2000/svg', tag), props, children);
}

function build(el, props, children) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.setAttribute('class', value);
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
  return el;
}

/** A time from the API (RFC 3339, UTC) as "2026-01-02 03:04:05 UTC", or a dash. */
function fmtTime(iso) {
  if (!iso) return h('span', { class: 'muted', text: '—' });
  // Two unbreakable halves: a narrow column wraps between the date and the time only.
  const [date, time] = iso.replace(/Z$/, '').split('T');
  return h('time', { datetime: iso }, h('span', { class: 'nowrap', text: date }), ' ',
    h('span', { class: 'nowrap', text: `${time} UTC` }));
}

/** Unix seconds as RFC 3339 without fractions. */
function isoOf(unix) {
  return new Date(unix * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function plural(n, one, many) {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

/** "900 s (15 min)". */
function fmtSeconds(n) {
  if (n % HOUR === 0) return `${n} s (${n / HOUR} h)`;
  if (n % 60 === 0) return `${n} s (${n / 60} min)`;
  return `${n} s`;
}

/**
 * A table in a container that scrolls sideways on its own (never the page). `rows` are
 * arrays of cells (strings or nodes); the first cell of a row is its header.
 */
function table(label, headers, rows, empty) {
  const body = rows.length
    ? rows.map((cells) => h('tr', null, cells.map((cell, i) =>
      i === 0 ? h('th', { scope: 'row' }, cell) : h('td', null, cell))))
    : [h('tr', null, h('td', { colspan: headers.length, class: 'empty', text: empty }))];
  return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: 0 },
    h('table', null,
      h('caption', { text: label }),
      h('thead', null, h('tr', null, headers.map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', null, body)));
}

function code(text) {
  return h('code', { text });
}

function statusBadge(enabled) {
  return h('span', { class: enabled ? 'badge badge-ok' : 'badge badge-off', text: enabled ? 'enabled' : 'disabled' });
}

// ---------------------------------------------------------------------------------------
// Messages: one polite status region and one alert region, outside the pages.

function say(text) {
  document.getElementById('alert').textContent = '';
  document.getElementById('status').textContent = text;
}

function fail(text) {
  document.getElementById('status').textContent = '';
  document.getElementById('alert').textContent = text;
}

function clearMessages() {
  document.getElementById('alert').textContent = '';
  document.getElementById('status').textContent = '';
}

/** Shows a failed request, unless it ended the session (the sign-in form then says why). */
function showError(err, what) {
  if (err instanceof ApiError && err.status === 401) return;
  fail(what ? `${what}: ${err.message}` : err.message);
}

// ---------------------------------------------------------------------------------------
// HTTP

class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/**
 * Calls the admin API: `path` is under /admin/v1. Returns `{ data, etag }`; throws an
 * ApiError carrying the problem's `detail`. A 401 (or an expired token) signs out.
 */
async function api(method, path, { body, ifMatch } = {}) {
  if (!session.token || Date.now() >= session.expiresAt) {
    signOut('Your session has expired. Sign in again to continue.');
    throw new ApiError(401, 'signed out');
  }
  const headers = { Authorization: `Bearer ${session.token}`, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (ifMatch) headers['If-Match'] = ifMatch;
  let response;
  try {
    response = await fetch(`${ROOT}admin/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'the server could not be reached; check the connection and try again');
  }
  const data = await readJson(response);
  if (response.status === 401) {
    signOut('The server no longer accepts your session (it expired or was revoked). Sign in again.');
    throw new ApiError(401, 'signed out');
  }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `the server answered ${response.status}`;
    throw new ApiError(response.status, detail, data && data.field);
  }
  return { data, etag: response.headers.get('ETag') };
}

/** A query string of the non-empty `params`, with its '?'. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : '';
}

// ---------------------------------------------------------------------------------------
// Sign-in and sign-out

/** application/x-www-form-urlencoded, as RFC 6749 §2.3.1 requires for Basic credentials. */
function formUrlEncode(text) {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

async function signIn(clientId, secret) {
  let basic;
  try {
    // The encoded form is ASCII, so btoa (which wants one byte per character) takes it.
    basic = btoa(`${formUrlEncode(clientId)}:${formUrlEncode(secret)}`);
  } catch {
    fail('Sign-in failed: the client ID or secret contains characters that cannot be sent.');
    return;
  }
  let response;
  try {
    response = await fetch(`${ROOT}oauth2/token`, {
      method: 'POST',
      credentials: 'omit',
      cache: 'no-store',
      headers: { Authorization: `Basic ${basic}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: `grant_type=client_credentials&resource=${encodeURIComponent('urn:latchkey:admin')}`,
    });
  } catch {
    fail('Sign-in failed: the server could not be reached. Check the connection and try again.');
    return;
  }
  const data = (await readJson(response)) || {};
  if (response.status === 401 || data.error === 'invalid_client') {
    fail('Sign-in failed: the client ID or secret is wrong, or the client is disabled.');
    return;
  }
  if (!response.ok || !data.access_token) {
    const why = data.error_description || data.error || `the server answered ${response.status}`;
    fail(`Sign-in failed: ${why}.`);
    return;
  }
  const scopes = String(data.scope || '').split(' ');
  if (!scopes.includes(ADMIN_SCOPE) && !scopes.includes(ADMIN_READ_SCOPE)) {
    fail(`Sign-in failed: this client's token lacks the ${ADMIN_SCOPE} or ${ADMIN_READ_SCOPE} scope.`);
    return;
  }
  const lifetime = Number(data.expires_in) > 0 ? Number(data.expires_in) : 300;
  Object.assign(session, {
    token: data.access_token,
    clientId,
    name: '',
    canWrite: scopes.includes(ADMIN_SCOPE),
    expiresAt: Date.now() + lifetime * 1000,
    timer: setTimeout(() => signOut('Your session has expired. Sign in again to continue.'), lifetime * 1000),
  });
  clearMessages();
  renderChrome();
  if (!/^#\/(clients|keys|audit)/.test(location.hash)) location.hash = '#/clients';
  else route();
  // The admin client's name, for the header; the ID alone will do if this fails.
  api('GET', `/clients/${encodeURIComponent(clientId)}`)
    .then(({ data: client }) => { session.name = client.name; renderChrome(); })
    .catch(() => {});
}

/** Forgets the token and shows the sign-in form with `message`. */
function signOut(message) {
  clearTimeout(session.timer);
  Object.assign(session, { token: null, clientId: '', name: '', canWrite: false, expiresAt: 0, timer: 0 });
  view += 1;
  // A secret on screen stays until it is saved; questions about changes go.
  for (const dialog of document.querySelectorAll('dialog:not(.keep)')) dialog.remove();
  renderChrome();
  renderSignIn();
  if (message) say(message);
}

function renderSignIn() {
  const idInput = h('input', { id: 'sign-in-id', name: 'client_id', autocomplete: 'username', required: true, spellcheck: 'false' });
  const secretInput = h('input', { id: 'sign-in-secret', name: 'client_secret', type: 'password', autocomplete: 'current-password', required: true });
  const button = h('button', { type: 'submit', class: 'primary', text: 'Sign in' });
  const form = h('form', {
    class: 'card sign-in',
    'aria-labelledby': 'page-title',
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      say('Signing in…');
      try {
        await signIn(idInput.value.trim(), secretInput.value);
      } finally {
        button.disabled = false;
      }
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'sign-in-id', text: 'Client ID' }), idInput),
  h('div', { class: 'field' }, h('label', { for: 'sign-in-secret', text: 'Client secret' }), secretInput),
  button);
  const main = document.getElementById('main');
  main.replaceChildren(
    h('h1', { id: 'page-title', tabindex: -1, text: 'Sign in' }),
    h('p', null, 'Sign in with an admin client’s ID and secret (',
      code('latchkey client create --admin'),
      '). The access token is kept in this tab’s memory only: reloading the page signs you out.'),
    form);
}

/** The header: the nav (current page marked) and who is signed in, or neither. */
function renderChrome() {
  const signedIn = Boolean(session.token);
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.hidden = !signedIn;
  who.hidden = !signedIn;
  const page = location.hash.split(/[/?]/)[1] || 'clients';
  for (const link of nav.querySelectorAll('a')) {
    if (signedIn && link.dataset.page === page) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!signedIn) {
    who.replaceChildren();
    return;
  }
  who.replaceChildren(
    h('span', { class: 'who-name' }, 'Signed in as ',
      h('strong', { text: session.name || session.clientId }),
      session.canWrite ? null : h('span', { class: 'badge badge-off', text: 'read-only' })),
    h('button', { type: 'button', class: 'link-button', text: 'Sign out', onclick: () => signOut('You have signed out.') }));
}

// ---------------------------------------------------------------------------------------
// Dialogs (never window.confirm)

/** A modal dialog; resolves with the value its buttons give, null on Escape. */
function openDialog(title, content, buttons, { escape = true, keep = false } = {}) {
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const heading = h('h2', { id: 'dialog-title', text: title });
    const dialog = h('dialog', { 'aria-labelledby': 'dialog-title', class: keep ? 'keep' : null }, heading, content);
    const close = (value) => {
      dialog.close();
      dialog.remove();
      if (opener && opener.isConnected) opener.focus();
      resolve(value);
    };
    dialog.append(h('div', { class: 'actions' }, buttons.map((b) =>
      h('button', { type: 'button', class: b.class, text: b.label, onclick: () => close(b.value()) }))));
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      if (escape) close(null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

/** Asks before a change; resolves true to go ahead. */
function confirmAction(title, text, label) {
  return openDialog(title, h('p', { text }), [
    { label, class: 'danger', value: () => true },
    { label: 'Cancel', value: () => false },
  ]).then(Boolean);
}

/**
 * Shows a new secret once. It exists in the DOM only while the dialog is open: "I have saved
 * it" removes the dialog (Escape does not, so it is not lost by accident).
 */
function showSecretOnce(title, clientId, secret) {
  const value = h('code', { class: 'secret', id: 'new-secret', text: secret });
  const note = h('p', { role: 'status', class: 'dialog-status' });
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      note.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard (a plain-http origin, or no permission): select it for a manual copy.
      getSelection().selectAllChildren(value);
      note.textContent = 'Copying is not allowed here: the secret is selected, copy it with your keyboard.';
    }
  };
  const content = h('div', null,
    h('p', { class: 'warning-text' }, h('strong', { text: 'This secret is shown only once.' }),
      ' Store it now (in a secret manager): it cannot be shown again.'),
    h('dl', { class: 'pairs' },
      h('dt', { text: 'Client ID' }), h('dd', null, code(clientId)),
      h('dt', { text: 'Client secret' }), h('dd', null, value)),
    h('p', null, h('button', { type: 'button', text: 'Copy', onclick: copy })),
    note);
  return openDialog(title, content, [{ label: 'I have saved it', class: 'primary', value: () => true }], { escape: false, keep: true });
}

// ---------------------------------------------------------------------------------------
// Routing: #/clients, #/clients/ID, #/keys, #/audit[?client=ID]

function route() {
  if (!session.token) {
    renderSignIn();
    return;
  }
  view += 1;
  clearMessages();
  const [path, search] = location.hash.replace(/^#/, '').split('?');
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    // A malformed %-escape in the address: treat it as an unknown page.
    parts = ['not-found'];
  }
  const params = new URLSearchParams(search || '');
  renderChrome();
  if (parts[0] === 'clients' && parts[1]) pageClient(parts[1]);
  else if (parts[0] === 'keys') pageKeys();
  else if (parts[0] === 'audit') pageAudit(params.get('client') || '');
  else pageClients();
}

/** Starts a page: its heading (focused, for screen readers and keyboards) and a guard. */
function startPage(title) {
  const mine = view;
  const heading = h('h1', { id: 'page-title', tabindex: -1, text: title });
  const main = document.getElementById('main');
  main.replaceChildren(heading);
  heading.focus();
  return { main, heading, current: () => mine === view && Boolean(session.token) };
}

// ---------------------------------------------------------------------------------------
// Clients

function pageClients() {
  const { main, current } = startPage('Clients');
  const search = h('input', { id: 'client-search', type: 'search', value: clientList.name, spellcheck: 'false' });
  const found = h('div', { class: 'found' });
  const list = h('div', { class: 'list', 'aria-busy': 'true' });
  const pager = h('div', { class: 'pager' });

  async function load() {
    list.setAttribute('aria-busy', 'true');
    const text = clientList.name;
    try {
      const [{ data: page }, byId] = await Promise.all([
        api('GET', `/clients${query({ limit: PAGE_SIZE, name: text, after: clientList.after })}`),
        // Text that could be an ID: offer that client too (a 404 just means it is not one).
        !clientList.after && /^[A-Za-z0-9._~-]{4,}$/.test(text)
          ? api('GET', `/clients/${encodeURIComponent(text)}`).then((r) => r.data, () => null)
          : null,
      ]);
      if (!current()) return;
      found.replaceChildren(byId ? h('p', { class: 'note' }, 'A client has this ID: ',
        h('a', { href: `#/clients/${encodeURIComponent(byId.client_id)}`, text: byId.name }), ' ', code(byId.client_id)) : '');
      list.replaceChildren(clientsTable(page.items, text));
      renderPager(page.next);
    } catch (err) {
      if (current()) showError(err, 'Could not list the clients');
    } finally {
      list.setAttribute('aria-busy', 'false');
    }
  }

  function renderPager(next) {
    const previous = h('button', { type: 'button', text: 'Previous page', disabled: clientList.previous.length === 0 });
    const nextButton = h('button', { type: 'button', text: 'Next page', disabled: !next });
    previous.addEventListener('click', () => {
      clientList.after = clientList.previous.pop() || '';
      load().then(() => list.querySelector('.table-wrap')?.focus());
    });
    nextButton.addEventListener('click', () => {
      clientList.previous.push(clientList.after);
      clientList.after = next;
      load().then(() => list.querySelector('.table-wrap')?.focus());
    });
    pager.replaceChildren(previous, nextButton,
      h('span', { class: 'muted', text: `Page ${clientList.previous.length + 1}` }));
  }

  const searchForm = h('form', {
    class: 'search', role: 'search',
    onsubmit: (event) => {
      event.preventDefault();
      Object.assign(clientList, { name: search.value.trim(), after: '', previous: [] });
      load();
    },
  }, h('label', { for: 'client-search', text: 'Search clients by name' }),
  h('div', { class: 'inline' }, search, h('button', { type: 'submit', text: 'Search' })));

  main.append(
    session.canWrite ? createClientSection() : null,
    searchForm, found, list, pager);
  load();
}

function clientsTable(clients, filter) {
  const rows = clients.map((c) => [
    h('a', { href: `#/clients/${encodeURIComponent(c.client_id)}`, text: c.name }),
    code(c.client_id), statusBadge(c.enabled), c.auth_method, fmtTime(c.created_at)]);
  return table('Clients', ['Name', 'ID', 'Status', 'Auth method', 'Created'], rows,
    filter ? 'No client’s name contains that text.' : 'No clients yet.');
}

/** "New client": a toggle that shows the creation form. */
function createClientSection() {
  const field = (id, label, attrs, hint) => h('div', { class: 'field' },
    h('label', { for: id, text: label }),
    h('input', { id, name: id, ...attrs, 'aria-describedby': hint ? `${id}-hint` : null }),
    hint ? h('p', { id: `${id}-hint`, class: 'hint', text: hint }) : null);
  // novalidate: the server's problem names the field at fault, shown in the alert region.
  const form = h('form', { class: 'card', id: 'create-client', hidden: true, novalidate: true, 'aria-label': 'Create a client' },
    field('new-name', 'Name', { required: true, maxlength: 200 }),
    field('new-scope', 'Scopes (space-separated)', { spellcheck: 'false' }, 'Like “read write”. Also its default scope.'),
    field('new-audience', 'Audiences (space-separated URIs)', { spellcheck: 'false' }, 'Like https://api.example.com: the APIs it may get tokens for.'),
    field('new-ttl', 'Token lifetime (seconds, optional)', { type: 'number', min: 10, max: 86400, inputmode: 'numeric' }, '10 to 86400; default 900.'),
    h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary', text: 'Create client' }),
      h('button', { type: 'button', text: 'Cancel', onclick: () => toggle(false) })));
  const opener = h('button', { type: 'button', class: 'primary', 'aria-expanded': 'false', 'aria-controls': 'create-client', text: 'New client' });
  function toggle(open) {
    form.hidden = !open;
    opener.setAttribute('aria-expanded', String(open));
    if (open) form.querySelector('input').focus();
    else opener.focus();
  }
  opener.addEventListener('click', () => toggle(form.hidden));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    createClient(form);
  });
  return h('section', { class: 'create', 'aria-label': 'New client' }, opener, form);
}

async function createClient(form) {
  const value = (id) => form.querySelector(`#${id}`).value.trim();
  const body = {
    name: value('new-name'),
    scope: value('new-scope').split(/\s+/).filter(Boolean).join(' '),
    audience: value('new-audience').split(/\s+/).filter(Boolean),
  };
  if (value('new-ttl')) body.token_ttl_seconds = Number(value('new-ttl'));
  for (const input of form.querySelectorAll('input')) input.removeAttribute('aria-invalid');
  try {
    const { data } = await api('POST', '/clients', { body });
    form.reset();
    say(`Client “${data.name}” created.`);
    if (data.client_secret) await showSecretOnce('Client created: save its secret', data.client_id, data.client_secret);
    location.hash = `#/clients/${encodeURIComponent(data.client_id)}`;
  } catch (err) {
    showError(err, 'The client was not created');
    // Point at the field the server named.
    const input = { name: 'new-name', scope: 'new-scope', audience: 'new-audience', token_ttl_seconds: 'new-ttl' }[err.field];
    if (input) {
      form.querySelector(`#${input}`).setAttribute('aria-invalid', 'true');
      form.querySelector(`#${input}`).focus();
    }
  }
}

// ---------------------------------------------------------------------------------------
// One client

function pageClient(id) {
  const { main, heading, current } = startPage('Client');
  const state = { client: null, etag: null, range: 'day' };
  const actions = h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Client actions' });
  const details = h('section', { 'aria-labelledby': 'details-title' }, h('h2', { id: 'details-title', text: 'Details' }));
  const caching = h('div', { class: 'caching' });
  const usage = h('section', { 'aria-labelledby': 'usage-title' });
  const secrets = h('section', { 'aria-labelledby': 'secrets-title' });
  main.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/clients', text: '← All clients' })),
    actions, caching, details, usage, secrets);
  const path = `/clients/${encodeURIComponent(id)}`;

  /** Loads everything on the page; false when the client itself could not be read. */
  async function load() {
    try {
      const [client, secretList] = await Promise.all([api('GET', path), api('GET', `${path}/secrets`)]);
      if (!current()) return;
      state.client = client.data;
      state.etag = client.etag;
      heading.textContent = `Client: ${state.client.name}`;
      renderActions();
      details.replaceChildren(h('h2', { id: 'details-title', text: 'Details' }), clientDetails(state.client, state.etag));
      secrets.replaceChildren(h('h2', { id: 'secrets-title', text: 'Secrets' }), secretsTable(secretList.data));
    } catch (err) {
      if (!current()) return;
      if (err.status === 404) details.replaceChildren(h('p', { text: `There is no client with the ID ${id}.` }));
      showError(err, 'Could not load the client');
      return false;
    }
    await Promise.all([loadUsage(), loadCaching()]);
    return true;
  }

  async function loadUsage() {
    const range = state.range === 'day'
      ? { seconds: DAY, step: HOUR, words: 'the last 24 hours', unit: 'hour' }
      : { seconds: 7 * DAY, step: 6 * HOUR, words: 'the last 7 days', unit: '6 hours' };
    const since = Math.floor(Date.now() / 1000) - range.seconds;
    try {
      const { data } = await api('GET', `/usage${query({ client: id, since, step: range.step, limit: 100 })}`);
      if (current()) renderUsage(usage, data, since, range, (r) => { state.range = r; loadUsage(); }, state.range);
    } catch (err) {
      if (current()) showError(err, 'Could not load the usage');
    }
  }

  async function loadCaching() {
    const since = Math.floor(Date.now() / 1000) - DAY;
    try {
      const { data } = await api('GET', `/usage/not-caching${query({ client: id, since })}`);
      if (current()) caching.replaceChildren(cachingNote(data));
    } catch (err) {
      if (current()) showError(err, 'Could not check token caching');
    }
  }

  /** Runs a change, then reloads; `key` names the button to give focus back to. */
  async function change(done, failed, run, key) {
    try {
      await run();
      say(done);
      await load();
    } catch (err) {
      if (err.status === 412) {
        fail('Someone else changed this client since it was loaded. It has been reloaded: check it and try again.');
        await load();
      } else {
        showError(err, failed);
      }
    }
    actions.querySelector(`[data-key="${key}"]`)?.focus();
  }

  function renderActions() {
    const c = state.client;
    const button = (key, text, onclick, cls) => h('button', { type: 'button', 'data-key': key, class: cls, text, onclick });
    const refresh = button('refresh', 'Refresh', async () => {
      say('Refreshing…');
      if (await load() && current()) say('Refreshed.');
    });
    if (!session.canWrite) {
      actions.replaceChildren(refresh);
      return;
    }
    if (c.client_id === session.clientId) {
      // The server refuses (409) to let an admin lock itself out.
      actions.replaceChildren(refresh, h('p', { class: 'note',
        text: 'You are signed in as this client: disable it, revoke its tokens or rotate its secret with another admin client or the CLI.' }));
      return;
    }
    const toggle = c.enabled
      ? button('toggle', 'Disable client', async () => {
        if (await confirmAction('Disable this client?', `“${c.name}” will fail to authenticate, and every token it holds is revoked now.`, 'Disable')) {
          await change(`Client “${c.name}” disabled.`, 'The client was not disabled', () => api('POST', `${path}/disable`, { ifMatch: state.etag }), 'toggle');
        }
      }, 'danger')
      : button('toggle', 'Enable client', () =>
        change(`Client “${c.name}” enabled.`, 'The client was not enabled', () => api('POST', `${path}/enable`, { ifMatch: state.etag }), 'toggle'));
    const revoke = button('revoke', 'Revoke tokens', async () => {
      if (await confirmAction('Revoke its tokens?', `Every token “${c.name}” holds stops working now; its next token request gets a new one.`, 'Revoke tokens')) {
        await change(`The tokens of “${c.name}” are revoked.`, 'The tokens were not revoked', () => api('POST', `${path}/revoke-tokens`, { ifMatch: state.etag }), 'revoke');
      }
    }, 'danger');
    // Only a client that authenticates with a secret has one to rotate.
    const rotate = c.auth_method.startsWith('client_secret')
      ? button('rotate', 'Rotate secret', () => rotateSecret(c, path, load)) : null;
    actions.replaceChildren(refresh, rotate, toggle, revoke);
  }

  main.append(h('p', null, h('a', { href: `#/audit?client=${encodeURIComponent(id)}`, text: 'This client’s audit trail' })));
  load();
}

/** Asks how long the old secrets keep working, rotates, and shows the new secret once. */
async function rotateSecret(client, path, reload) {
  const overlap = h('select', { id: 'rotate-overlap' },
    h('option', { value: '86400', text: '1 day (the default)' }),
    h('option', { value: '3600', text: '1 hour' }),
    h('option', { value: '604800', text: '7 days' }),
    h('option', { value: '0', text: 'No time: they stop now' }));
  const go = await openDialog('Rotate the secret?', h('div', null,
    h('p', { text: `A new secret is made for “${client.name}”. Its other secrets keep working for a while, so its deployments can switch.` }),
    h('div', { class: 'field' }, h('label', { for: 'rotate-overlap', text: 'Old secrets keep working for' }), overlap)),
  [{ label: 'Rotate', class: 'danger', value: () => Number(overlap.value) }, { label: 'Cancel', value: () => null }]);
  if (go === null) return;
  try {
    const { data } = await api('POST', `${path}/secrets/rotate`, { body: { overlap_seconds: go } });
    say('The secret was rotated.');
    await showSecretOnce('Secret rotated: save the new one', data.client_id, data.client_secret);
  } catch (err) {
    showError(err, 'The secret was not rotated');
  }
  await reload();
  document.querySelector('[data-key="rotate"]')?.focus();
}

function clientDetails(c, etag) {
  const rows = [
    ['ID', code(c.client_id)],
    ['Name', c.name],
    ['Status', statusBadge(c.enabled)],
    ['Scopes', c.scope ? c.scope.split(' ').map((x) => [code(x), ' ']) : h('span', { class: 'muted', text: 'none' })],
    ['Audiences', c.audience.length ? h('ul', { class: 'plain' }, c.audience.map((a) => h('li', null, code(a)))) : h('span', { class: 'muted', text: 'none' })],
    ['Token lifetime', fmtSeconds(c.token_ttl_seconds)],
    ['Token format', c.token_format],
    ['Auth method', c.auth_method],
    ['Grant types', c.grant_types.join(' ') || 'none'],
    ['May introspect', c.can_introspect ? 'yes' : 'no'],
  ];
  // The key source of a client without a secret.
  for (const key of ['jwks_uri', 'tls_client_auth_subject_dn', 'tls_client_auth_san_dns', 'tls_client_auth_san_uri',
    'tls_client_auth_san_ip', 'tls_client_auth_san_email', 'federated_issuer', 'federated_subject', 'federated_audience']) {
    if (c[key]) rows.push([key.replace(/_/g, ' '), code(c[key])]);
  }
  if (c.jwks && Array.isArray(c.jwks.keys)) rows.push(['Registered keys', plural(c.jwks.keys.length, 'key', 'keys')]);
  rows.push(['Created', fmtTime(c.created_at)], ['Updated', fmtTime(c.updated_at)], ['Version (ETag)', code(etag || '—')]);
  return h('dl', { class: 'details' }, rows.map(([k, v]) => h('div', null, h('dt', { text: k }), h('dd', null, v))));
}

function secretsTable(list) {
  const now = new Date().toISOString();
  const rows = list.map((x) => [
    code(x.secret_id), fmtTime(x.created_at), fmtTime(x.last_used_at),
    x.expires_at
      ? [x.expires_at <= now ? 'expired ' : 'expires ', fmtTime(x.expires_at)]
      : 'never expires']);
  return table('Secrets (live ones; a secret is never shown again)', ['ID', 'Created', 'Last used', 'Expiry'], rows, 'This client has no secret.');
}

/** The not-caching warning, or a quiet note that there is none. */
function cachingNote(rows) {
  if (!rows.length) return h('p', { class: 'note', text: 'Not flagged for token caching: no hour in the last 24 hours with more tokens than a client that caches them needs.' });
  return h('div', { class: 'warning', role: 'note', 'aria-labelledby': 'caching-title' },
    h('h2', { id: 'caching-title', text: 'Not caching its tokens' }),
    h('ul', null, rows.map((r) => h('li', null,
      `${plural(r.tokens, 'token', 'tokens')} from `, code(r.source), ' in the hour of ', fmtTime(r.hour),
      `, where ${r.allowed.toLocaleString('en-US')} would do (tokens last ${fmtSeconds(r.token_lifetime)}).`))),
    h('p', null, 'Use a token cache such as ', code('latchkey-client'), ' or ', code('latchkey token --cache-file'), '.'));
}

// ---------------------------------------------------------------------------------------
// Usage chart

/** Usage rows (sparse: only periods with counts) as one bucket per step, oldest first. */
function usageBuckets(rows, since, step) {
  const byStart = new Map(rows.map((r) => [Date.parse(r.from) / 1000, r]));
  const now = Math.floor(Date.now() / 1000);
  const buckets = [];
  for (let t = Math.floor(since / step) * step; t <= now; t += step) {
    const row = byStart.get(t);
    const denied = row ? Object.values(row.denied).reduce((a, b) => a + b, 0) : 0;
    buckets.push({ start: t, tokens: row ? row.tokens : 0, denied });
  }
  return buckets;
}

function renderUsage(section, rows, since, range, setRange, current) {
  const buckets = usageBuckets(rows, since, range.step);
  const tokens = rows.reduce((a, r) => a + r.tokens, 0);
  const deniedByCode = {};
  for (const r of rows) for (const [k, n] of Object.entries(r.denied)) deniedByCode[k] = (deniedByCode[k] || 0) + n;
  const denied = Object.values(deniedByCode).reduce((a, b) => a + b, 0);
  const codes = Object.entries(deniedByCode).map(([k, n]) => `${k} ${n}`).join(', ');
  const tab = (key, text) => h('button', { type: 'button', 'aria-pressed': String(current === key), text,
    onclick: () => { if (current !== key) setRange(key); } });
  section.replaceChildren(
    h('h2', { id: 'usage-title', text: 'Usage' }),
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Usage period' }, tab('day', 'Last 24 hours'), tab('week', 'Last 7 days')),
    h('p', { id: 'usage-summary', class: 'summary' },
      `${plural(tokens, 'token', 'tokens')} issued in ${range.words}; `,
      denied ? `${plural(denied, 'request', 'requests')} refused (${codes}).` : 'no request refused.'),
    usageChart(buckets, range),
    table(`Tokens issued and requests refused per ${range.unit}, ${range.words}`, ['Period from (UTC)', 'Tokens', 'Refused'],
      buckets.map((b) => [isoOf(b.start).replace('T', ' ').replace('Z', ''), String(b.tokens), String(b.denied)]), '')
  );
  section.lastChild.classList.add('visually-hidden');
  section.lastChild.removeAttribute('tabindex');
}

/** Stacked bars (tokens, then refusals) per bucket, as SVG; hidden from screen readers, which get the table. */
function usageChart(buckets, range) {
  // As wide as the page allows (up to 960), so the labels keep their size on a phone.
  const W = Math.round(Math.min(960, Math.max(280, document.getElementById('main').clientWidth - 32)));
  const H = 180, left = 40, bottom = 22, top = 8;
  const max = Math.max(1, ...buckets.map((b) => b.tokens + b.denied));
  const y = (n) => top + (H - top - bottom) * (1 - n / max);
  const slot = (W - left - 4) / buckets.length;
  const bars = [];
  const labels = [];
  buckets.forEach((b, i) => {
    const x = left + i * slot + 1;
    const width = Math.max(1, slot - 2);
    const what = `${isoOf(b.start).replace('T', ' ').replace(':00Z', ' UTC')}: ${b.tokens} tokens, ${b.denied} refused`;
    bars.push(s('g', null, s('title', { text: what }),
      s('rect', { class: 'bar-tokens', x, width, y: y(b.tokens), height: y(0) - y(b.tokens) }),
      b.denied ? s('rect', { class: 'bar-denied', x, width, y: y(b.tokens + b.denied), height: y(b.tokens) - y(b.tokens + b.denied) }) : null));
    // Label every 6 hours (a day's view) or every day (a week's view).
    const every = range.step === HOUR ? 6 * HOUR : DAY;
    if (b.start % every === 0) {
      const text = range.step === HOUR ? isoOf(b.start).slice(11, 16) : isoOf(b.start).slice(5, 10);
      labels.push(s('text', { x: x + width / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis', text }));
    }
  });
  return h('figure', { class: 'chart' },
    s('svg', { viewBox: `0 0 ${W} ${H}`, 'aria-hidden': 'true', focusable: 'false', preserveAspectRatio: 'xMidYMid meet' },
      s('line', { x1: left, x2: W, y1: y(0), y2: y(0), class: 'grid' }),
      s('line', { x1: left, x2: W, y1: y(max), y2: y(max), class: 'grid' }),
      s('text', { x: left - 6, y: y(max) + 4, 'text-anchor': 'end', class: 'axis', text: String(max) }),
      s('text', { x: left - 6, y: y(0) + 4, 'text-anchor': 'end', class: 'axis', text: '0' }),
      bars, labels),
    h('figcaption', { class: 'legend' },
      h('span', { class: 'swatch swatch-tokens' }), ' tokens issued ',
      h('span', { class: 'swatch swatch-denied' }), ' requests refused (times in UTC)'));
}

// ---------------------------------------------------------------------------------------
// Signing keys

async function pageKeys() {
  const { main, current } = startPage('Signing keys');
  try {
    const { data: keys } = await api('GET', '/keys');
    if (!current()) return;
    const rows = keys.map((k) => [code(k.kid), k.alg, h('span', { class: `badge state-${k.state}`, text: k.state }),
      fmtTime(k.created_at), fmtTime(k.activated_at), fmtTime(k.retired_at), fmtTime(k.removed_at),
      fmtTime(k.next_step_at), k.sealed ? 'yes' : 'no']);
    main.append(
      h('p', { text: 'A next key is published before it signs; the current key signs; a retired key is published until the tokens it signed have expired, then removed.' }),
      table('Signing keys', ['Key ID', 'Algorithm', 'State', 'Created', 'Began signing', 'Retired', 'Removed', 'Next step', 'Sealed'], rows, 'No signing keys.'),
      h('h2', { text: 'Timeline' }),
      keyTimeline(keys));
  } catch (err) {
    if (current()) showError(err, 'Could not list the signing keys');
  }
}

/** One bar per key from creation on, coloured by state; CSS boxes placed by percentages. */
function keyTimeline(keys) {
  const t = (iso) => (iso ? Date.parse(iso) / 1000 : null);
  const now = Date.now() / 1000;
  const starts = keys.map((k) => t(k.created_at));
  const ends = keys.flatMap((k) => [t(k.removed_at), t(k.next_step_at)]).filter(Boolean);
  const from = Math.min(now, ...starts);
  const to = from + Math.max(Math.max(now, ...ends) - from, 600) * 1.05;
  const share = (seconds) => `${((seconds / (to - from)) * 100).toFixed(2)}%`;
  const pct = (x) => share(x - from);
  const segment = (state, a, b, planned) => {
    const el = h('span', { class: `seg state-${state}${planned ? ' planned' : ''}`,
      title: `${planned ? 'planned: ' : ''}${state} from ${isoOf(Math.floor(a))} to ${isoOf(Math.floor(b))}` });
    el.style.left = pct(a);
    el.style.width = `max(3px, ${share(b - a)})`;
    return el;
  };
  const items = keys.map((k) => {
    const created = t(k.created_at), activated = t(k.activated_at), retired = t(k.retired_at), removed = t(k.removed_at);
    const next = t(k.next_step_at);
    const segs = [];
    segs.push(segment('next', created, activated || (k.state === 'next' ? now : created)));
    if (activated) segs.push(segment('current', activated, retired || (k.state === 'current' ? now : activated)));
    if (retired) segs.push(segment('retired', retired, removed || now));
    if (next && next > now && (k.state === 'next' || k.state === 'retired')) {
      segs.push(segment(k.state === 'next' ? 'current' : 'removed', now, Math.max(next, now + 1), true));
    }
    const nowMark = h('span', { class: 'tl-now' });
    nowMark.style.left = pct(now);
    return h('li', null,
      h('span', { class: 'tl-label' }, code(`${k.kid.slice(0, 10)}…`), ` ${k.alg} ${k.state}`),
      h('div', { class: 'tl-track', 'aria-hidden': 'true' }, segs, nowMark));
  });
  return h('figure', { class: 'timeline' },
    h('ol', { 'aria-label': 'Keys on the timeline' }, items),
    h('div', { class: 'tl-axis' }, h('span', null, fmtTime(isoOf(Math.floor(from)))), h('span', null, fmtTime(isoOf(Math.floor(to))))),
    h('figcaption', { class: 'legend' },
      ['next', 'current', 'retired'].map((st) => [h('span', { class: `swatch state-${st}` }), ` ${st} `]),
      h('span', { class: 'swatch planned' }), ' planned; the line marks now. The table above has the exact times.'));
}

// ---------------------------------------------------------------------------------------
// Audit

function pageAudit(client) {
  const { main, current } = startPage('Audit');
  const state = { client, since: 7 * DAY, after: '', previous: [] };
  const input = h('input', { id: 'audit-client', type: 'search', value: client, spellcheck: 'false' });
  const since = h('select', { id: 'audit-since' },
    [[DAY, 'the last 24 hours'], [7 * DAY, 'the last 7 days'], [30 * DAY, 'the last 30 days'], [0, 'all time']]
      .map(([v, text]) => h('option', { value: v, text, selected: v === state.since })));
  const list = h('div');
  const pager = h('div', { class: 'pager' });

  async function load() {
    const from = state.since ? Math.floor(Date.now() / 1000) - state.since : '';
    try {
      const { data } = await api('GET', `/audit${query({ client: state.client, since: from, after: state.after, limit: PAGE_SIZE })}`);
      if (!current()) return;
      list.replaceChildren(auditTable(data.items));
      const previous = h('button', { type: 'button', text: 'Previous page', disabled: state.previous.length === 0 });
      const next = h('button', { type: 'button', text: 'Next page', disabled: data.next == null });
      previous.addEventListener('click', () => { state.after = state.previous.pop() || ''; load(); });
      next.addEventListener('click', () => { state.previous.push(state.after); state.after = data.next; load(); });
      pager.replaceChildren(previous, next);
    } catch (err) {
      if (current()) showError(err, 'Could not read the audit trail');
    }
  }

  const form = h('form', {
    class: 'search filters',
    onsubmit: (event) => {
      event.preventDefault();
      Object.assign(state, { client: input.value.trim(), since: Number(since.value), after: '', previous: [] });
      load();
    },
  },
  h('div', { class: 'field' }, h('label', { for: 'audit-client', text: 'Filter by client or key ID' }), input),
  h('div', { class: 'field' }, h('label', { for: 'audit-since', text: 'Events from' }), since),
  h('button', { type: 'submit', text: 'Filter' }));
  main.append(h('p', { text: 'Oldest first. Every change to a client, secret or key, with the fields before and after (never a secret).' }), form, list, pager);
  load();
}

function auditTable(events) {
  const rows = events.map((e) => {
    const target = e.target && /^(client|secret)\./.test(e.action)
      ? h('a', { href: `#/clients/${encodeURIComponent(e.target)}` }, code(e.target))
      : e.target ? code(e.target) : '—';
    return [fmtTime(e.at), e.actor, actionLabel(e), target, changesSummary(e.changes)];
  });
  return table('Audit events', ['Time', 'Actor', 'Action', 'Target', 'Changes'], rows, 'No events match.');
}

/** The action, with what a client update did when it enabled or disabled the client. */
function actionLabel(event) {
  const enabled = event.changes && event.changes.enabled;
  if (event.action === 'client.update' && enabled && typeof enabled === 'object' && 'after' in enabled) {
    return `${event.action} (${enabled.after ? 'enabled' : 'disabled'})`;
  }
  return event.action;
}

/** "name: a → b; scope: c" from the audit's {field: {before, after}} (or plain values). */
function changesSummary(changes) {
  if (!changes || typeof changes !== 'object') return String(changes ?? '');
  const show = (v, field) => {
    // Times in the changes are Unix seconds.
    if (/_at$/.test(field) && Number.isInteger(v)) return isoOf(v).replace('T', ' ').replace('Z', ' UTC');
    const text = typeof v === 'string' ? v : JSON.stringify(v);
    return text.length > 60 ? `${text.slice(0, 57)}…` : text;
  };
  const parts = Object.entries(changes).map(([field, v]) => {
    if (v && typeof v === 'object' && !Array.isArray(v) && ('before' in v || 'after' in v)) {
      if (!('before' in v)) return `${field}: ${show(v.after, field)}`;
      if (!('after' in v)) return `${field}: ${show(v.before, field)} → (none)`;
      return `${field}: ${show(v.before, field)} → ${show(v.after, field)}`;
    }
    return `${field}: ${show(v, field)}`;
  });
  return h('span', { class: 'changes', text: parts.join('; ') || '—' });
}

// ---------------------------------------------------------------------------------------

window.addEventListener('hashchange', route);
route();
