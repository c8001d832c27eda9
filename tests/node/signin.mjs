// Drives headless Chromium (Debian's, never a downloaded build) through Stagedoor's sign-in
// pages. Started by tests/it/browser.rs with the addresses of two running Stagedoors:
//   STAGEDOOR_URL  one development provider, routes /broken to a dead upstream
//   CHOOSER_URL    two development providers, so /oauth2/start shows the chooser
//   OIDC_URL       signs in through a real OpenID provider at OIDC_ISSUER
//   SHOTS_DIR      where screenshots go
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.STAGEDOOR_URL;
const chooserBase = process.env.CHOOSER_URL;
const oidcBase = process.env.OIDC_URL;
const issuer = process.env.OIDC_ISSUER;
const shots = process.env.SHOTS_DIR ?? 'target/browser-shots';
assert.ok(base && chooserBase && oidcBase && issuer, 'STAGEDOOR_URL, CHOOSER_URL, OIDC_URL and OIDC_ISSUER must be set');
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

async function step(name, fn) {
  process.stdout.write(`browser: ${name} ... `);
  await fn();
  console.log('ok');
}

try {
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  const page = await context.newPage();
  // Every request the pages make must stay on Stagedoor's own origins: no external assets.
  const foreign = [];
  page.on('request', (r) => {
    // The provider's own login page is not ours to judge (it asks for a web font).
    if (r.frame().url().startsWith(issuer)) return;
    const ours = [base, chooserBase, oidcBase, issuer].some((origin) => r.url().startsWith(origin));
    if (!ours) foreign.push(r.url());
  });

  await step('a protected page leads to the development sign-in form', async () => {
    await page.goto(`${base}/catalog/default?kind=user&x=1`);
    assert.match(new URL(page.url()).pathname, /^\/oauth2\/dev$/);
    assert.equal(await page.title(), 'Development sign-in · Stagedoor');
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    await page.getByRole('heading', { level: 1, name: 'Development sign-in' }).waitFor();
    await page.getByText('Development only').waitFor();
    await page.screenshot({ path: `${shots}/dev-sign-in.png`, fullPage: true });
  });

  await step('choosing a user signs in and returns to the exact page', async () => {
    await page.getByRole('button', { name: /Alice/ }).click();
    await page.waitForURL(`${base}/catalog/default?kind=user&x=1`);
    await page.getByText('Signed in as alice@example.com').waitFor();
    await page.screenshot({ path: `${shots}/upstream.png` });
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === '_stagedoor');
    assert.ok(session, 'session cookie set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Lax');
    assert.equal(cookies.some((c) => c.name === '_stagedoor_csrf'), false);
  });

  await step('an unreachable upstream shows the error page', async () => {
    const response = await page.goto(`${base}/broken/path`);
    assert.equal(response.status(), 502);
    await page.getByRole('heading', { level: 1, name: 'Bad Gateway' }).waitFor();
    await page.screenshot({ path: `${shots}/error-502.png` });
  });

  await step('a route the user may not use shows who they are and why', async () => {
    const response = await page.goto(`${base}/forbidden/report`);
    assert.equal(response.status(), 403);
    await page.getByRole('heading', { level: 1, name: 'Access denied' }).waitFor();
    await page.getByText('You are signed in as alice@example.com').waitFor();
    await page.getByRole('link', { name: 'Sign out' }).waitFor();
    await page.screenshot({ path: `${shots}/forbidden-403.png` });
  });

  await step('sign-out ends the session', async () => {
    await page.goto(`${base}/oauth2/sign_out`);
    await page.getByRole('heading', { level: 1, name: 'Signed out' }).waitFor();
    await page.screenshot({ path: `${shots}/signed-out.png` });
    assert.equal((await context.cookies()).some((c) => c.name === '_stagedoor'), false);
    await page.getByRole('link', { name: 'Sign in again' }).click();
    await page.getByRole('heading', { level: 1, name: 'Development sign-in' }).waitFor();
  });

  await step('with several providers the chooser is shown', async () => {
    await page.goto(`${chooserBase}/docs`);
    await page.getByRole('heading', { level: 1, name: 'Sign in' }).waitFor();
    const links = page.getByRole('link', { name: /^Sign in with / });
    assert.equal(await links.count(), 2);
    await page.screenshot({ path: `${shots}/chooser.png` });
    await page.getByRole('link', { name: 'Sign in with Contractor sign-in' }).click();
    await page.getByRole('button', { name: /carol@example\.net/ }).click();
    await page.waitForURL(`${chooserBase}/docs`);
    await page.getByText('Signed in as carol@example.net').waitFor();
  });

  await step('sign-in through a real OpenID provider returns to the page', async () => {
    await page.goto(`${oidcBase}/catalog?kind=group`);
    assert.ok(page.url().startsWith(issuer), `at the provider: ${page.url()}`);
    await page.fill('input[name=login]', 'alice');
    await page.fill('input[name=password]', 'anything');
    await page.screenshot({ path: `${shots}/oidc-provider-login.png` });
    await Promise.all([page.waitForURL(`${oidcBase}/catalog?kind=group`), page.click('button[type=submit]')]);
    await page.getByText('Signed in as alice@example.com').waitFor();
  });

  await step('dark mode renders', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.goto(`${base}/oauth2/sign_out`);
    await page.screenshot({ path: `${shots}/signed-out-dark.png` });
  });

  assert.deepEqual(foreign, [], 'pages loaded assets from elsewhere');
} finally {
  await browser.close();
}
