// Drives the web console at /console/ in headless Chromium, through its accessible names
// (labels, roles), and checks it against the server from Node.
//
//   node console.mjs BASE_URL ADMIN_CLIENT_ID ADMIN_CLIENT_SECRET SCREENSHOT_DIR
//
// Prints {"ok":true,"screenshots":[...]} and exits 0 when every step holds; otherwise prints
// the reason to stderr, saves failure.png in SCREENSHOT_DIR and exits 1. Every wait is
// bounded, so it never hangs.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, adminId, adminSecret, shotDir] = process.argv.slice(2);
if (!shotDir) {
  console.error('usage: node console.mjs BASE_URL ADMIN_CLIENT_ID ADMIN_CLIENT_SECRET SCREENSHOT_DIR');
  process.exit(2);
}
mkdirSync(shotDir, { recursive: true });

const TIMEOUT = 20_000;
const screenshots = [];
const pageErrors = [];
let browser;
let page;

// Should a bounded wait still not return, give up anyway.
const watchdog = setTimeout(() => finish(new Error('the test took longer than 3 minutes')), 180_000);

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function shot(name) {
  await page.screenshot({ path: join(shotDir, name), fullPage: true, timeout: TIMEOUT });
  screenshots.push(join(shotDir, name));
}

/** application/x-www-form-urlencoded, for Basic credentials (RFC 6749 §2.3.1). */
function formEncode(text) {
  return encodeURIComponent(text)
    .replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, '+');
}

/** A client-credentials token request from Node: { status, body }. */
async function tokenRequest(id, secret) {
  const basic = Buffer.from(`${formEncode(id)}:${formEncode(secret)}`).toString('base64');
  const response = await fetch(`${base}/oauth2/token`, {
    method: 'POST',
    headers: { Authorization: `Basic ${basic}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: 'grant_type=client_credentials',
    signal: AbortSignal.timeout(TIMEOUT),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

/** The accessible name of the focused element (its label, or its text). */
function focusedName(p) {
  return p.evaluate(() => {
    const el = document.activeElement;
    if (!el) return '';
    return ((el.labels && el.labels[0] && el.labels[0].textContent) || el.textContent || el.tagName).trim();
  });
}

/** The page scrolls sideways: its content is wider than the window. */
function scrollsSideways(p) {
  return p.evaluate(() => document.scrollingElement.scrollWidth > window.innerWidth);
}

async function heading(name) {
  await page.getByRole('heading', { level: 1, name }).waitFor({ timeout: TIMEOUT });
}

async function run() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    timeout: TIMEOUT,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  context.setDefaultNavigationTimeout(TIMEOUT);
  page = await context.newPage();
  // Script errors and Content-Security-Policy violations show up here.
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  // (Not the failed requests the test makes on purpose, like the wrong secret's 401.)
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) pageErrors.push(msg.text());
  });
  // The console's admin tokens, to check where they end up.
  const adminTokens = [];
  page.on('response', async (response) => {
    if (response.url().endsWith('/oauth2/token') && response.status() === 200) {
      const body = await response.json().catch(() => null);
      if (body && body.access_token) adminTokens.push(body.access_token);
    }
  });

  // 1. A wrong secret: the console's own alert, and the form is still there.
  await page.goto(`${base}/console/`, { waitUntil: 'load' });
  await page.getByLabel('Client ID').fill(adminId);
  await page.getByLabel('Client secret').fill('not-the-secret');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const alert = page.getByRole('alert').filter({ hasText: /Sign-in failed/ });
  await alert.waitFor({ state: 'visible' });
  check(/wrong/.test(await alert.textContent()), 'the sign-in alert does not say the secret is wrong');
  check(await page.getByLabel('Client secret').isVisible(), 'the sign-in form is gone after a failed sign-in');
  await shot('sign-in-error.png');

  // 2. The right secret: the Clients page.
  await page.getByLabel('Client secret').fill(adminSecret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await heading('Clients');
  await page.getByRole('table', { name: 'Clients' }).waitFor();
  check((await page.getByRole('link', { name: 'Clients', exact: true }).getAttribute('aria-current')) === 'page',
    'the Clients nav link is not marked current');
  await shot('clients.png');

  // 3. Create a client: its secret is shown once, then gone from the page.
  await page.getByRole('button', { name: 'New client' }).click();
  await page.getByLabel('Name', { exact: true }).fill('console-made');
  await page.getByLabel('Scopes (space-separated)').fill('read');
  await page.getByLabel('Audiences (space-separated URIs)').fill('https://api.example.com');
  await page.getByRole('button', { name: 'Create client' }).click();
  let dialog = page.getByRole('dialog', { name: /Client created/ });
  await dialog.waitFor();
  const secret = (await dialog.locator('#new-secret').textContent()).trim();
  const clientId = (await dialog.locator('dd code').first().textContent()).trim();
  check(secret.length >= 20 && clientId.length > 0, `no secret or client ID shown (${clientId})`);
  check(/shown only once/.test(await dialog.textContent()), 'the secret panel does not warn that it is shown once');
  await shot('client-created.png');
  await dialog.getByRole('button', { name: 'I have saved it' }).click();
  await heading('Client: console-made');
  check(!(await page.content()).includes(secret), 'the secret is still in the page after "I have saved it"');

  // 4. Three tokens from Node.
  for (let i = 0; i < 3; i += 1) {
    const { status } = await tokenRequest(clientId, secret);
    check(status === 200, `token request ${i + 1} of the new client: ${status}`);
  }

  // 5. The usage shows them once the server has written its counts (every 10 s).
  const summary = page.locator('#usage-summary');
  const deadline = Date.now() + TIMEOUT;
  let said = '';
  for (;;) {
    said = (await summary.textContent({ timeout: TIMEOUT })) || '';
    if (/^3 tokens issued in the last 24 hours/.test(said)) break;
    check(Date.now() < deadline, `the usage never showed 3 tokens; it says: ${said}`);
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.waitForTimeout(500);
  }
  check(await page.getByRole('table', { name: /Tokens issued and requests refused per hour/ }).count() === 1,
    'no table of the usage for screen readers');
  await shot('client-usage.png');

  // 6. Rotate the secret: a new one, shown once, that works.
  await page.getByRole('button', { name: 'Rotate secret' }).click();
  await page.getByRole('dialog', { name: /Rotate the secret/ }).getByRole('button', { name: 'Rotate', exact: true }).click();
  dialog = page.getByRole('dialog', { name: /Secret rotated/ });
  await dialog.waitFor();
  const newSecret = (await dialog.locator('#new-secret').textContent()).trim();
  check(newSecret.length >= 20 && newSecret !== secret, 'the rotated secret is missing or the old one');
  const rotated = await tokenRequest(clientId, newSecret);
  check(rotated.status === 200, `a token with the rotated secret: ${rotated.status}`);
  await dialog.getByRole('button', { name: 'I have saved it' }).click();
  await dialog.waitFor({ state: 'detached' });
  check(!(await page.content()).includes(newSecret), 'the rotated secret is still in the page');

  // 7. Disable it, after confirming: the page says so, and its secret no longer works.
  await page.getByRole('button', { name: 'Disable client' }).click();
  await page.getByRole('dialog', { name: /Disable this client/ }).getByRole('button', { name: 'Disable', exact: true }).click();
  await page.getByRole('button', { name: 'Enable client' }).waitFor();
  await page.getByRole('status').filter({ hasText: 'disabled' }).waitFor();
  check(await page.locator('.details .badge', { hasText: 'disabled' }).count() === 1, 'the details do not show the client disabled');
  const refused = await tokenRequest(clientId, newSecret);
  check(refused.status === 401 && refused.body && refused.body.error === 'invalid_client',
    `a token for the disabled client: ${refused.status} ${JSON.stringify(refused.body)}`);
  await shot('client-disabled.png');

  // 8. Signing keys, then the audit trail of the new client.
  await page.getByRole('link', { name: 'Signing keys' }).click();
  await heading('Signing keys');
  const keys = page.getByRole('table', { name: 'Signing keys' });
  await keys.waitFor();
  const keyRows = keys.locator('tbody tr');
  check(await keyRows.count() >= 1, 'no signing key listed');
  const states = await keyRows.locator('.badge').allTextContents();
  check(states.length >= 1 && states.every((s) => /^(next|current|retired|removed)$/.test(s)), `key states: ${states}`);
  await shot('keys.png');

  await page.getByRole('link', { name: 'Audit', exact: true }).click();
  await heading('Audit');
  await page.getByLabel('Filter by client or key ID').fill(clientId);
  await page.getByRole('button', { name: 'Filter' }).click();
  const events = page.getByRole('table', { name: 'Audit events' }).locator('tbody tr');
  await events.filter({ hasText: 'client.update (disabled)' }).first().waitFor();
  const created = await events.filter({ hasText: 'client.create' }).filter({ hasText: clientId }).count();
  check(created === 1, `the audit shows ${created} creations of the client`);
  await shot('audit.png');

  // 9. A narrow window: no page scrolls sideways (tables scroll in their own box).
  await page.setViewportSize({ width: 375, height: 800 });
  for (const hash of ['#/clients', '#/keys', '#/audit', `#/clients/${clientId}`]) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.getByRole('heading', { level: 1 }).waitFor();
    await page.waitForLoadState('networkidle', { timeout: TIMEOUT });
    check(!(await scrollsSideways(page)), `the page scrolls sideways at 375 px on ${hash}`);
  }
  await heading('Client: console-made');
  await summary.waitFor();
  await shot('narrow.png');

  // 10. The token lives in memory only.
  check(adminTokens.length >= 1, 'the console got no token');
  const stored = await page.evaluate(() => JSON.stringify([
    Object.entries(localStorage), Object.entries(sessionStorage), document.cookie, location.href]));
  for (const token of adminTokens) check(!stored.includes(token), 'the token is in storage, a cookie or the URL');

  // Signing out forgets it: the form is back.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Client secret').waitFor();

  // 11. The keyboard: Tab reaches the ID, then the secret, then the button; Enter submits.
  const fresh = await context.newPage();
  fresh.on('pageerror', (err) => pageErrors.push(String(err)));
  await fresh.goto(`${base}/console/`, { waitUntil: 'load' });
  await fresh.getByLabel('Client ID').waitFor();
  let name = '';
  for (let i = 0; i < 6 && name !== 'Client ID'; i += 1) {
    await fresh.keyboard.press('Tab');
    name = await focusedName(fresh);
  }
  check(name === 'Client ID', `Tab never reached "Client ID" (last: ${name})`);
  await fresh.keyboard.type(adminId);
  await fresh.keyboard.press('Tab');
  check(await focusedName(fresh) === 'Client secret', `after "Client ID", Tab reached "${await focusedName(fresh)}"`);
  await fresh.keyboard.press('Tab');
  check(await focusedName(fresh) === 'Sign in', `after "Client secret", Tab reached "${await focusedName(fresh)}"`);
  await fresh.keyboard.press('Shift+Tab');
  await fresh.keyboard.type(adminSecret);
  await fresh.keyboard.press('Enter');
  await fresh.getByRole('heading', { level: 1, name: 'Clients' }).waitFor({ timeout: TIMEOUT });
  await fresh.close();

  check(pageErrors.length === 0, `the page logged errors: ${pageErrors.join(' | ')}`);
}

let finished = false;
async function finish(error) {
  if (finished) return;
  finished = true;
  clearTimeout(watchdog);
  if (error) {
    console.error(`console test failed: ${error && error.stack ? error.stack : error}`);
    if (page) {
      await page.screenshot({ path: join(shotDir, 'failure.png'), fullPage: true, timeout: 5_000 }).catch(() => {});
    }
  } else {
    console.log(JSON.stringify({ ok: true, screenshots }));
  }
  if (browser) await browser.close().catch(() => {});
  process.exit(error ? 1 : 0);
}

run().then(() => finish(null), (error) => finish(error));
