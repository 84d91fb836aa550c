// Seed 000 by clicks in the web console, in headless Chromium: sign in with the admin token,
// switch to the workspace, ACS Systems, the system, Add user, the Users table, the user, link a
// new user identity, Manage Access, Add Credential (mobile key, start & end), Done, the linked
// identity, Generate Instant Key, then open the link from the dialog as a phone and unlock. A
// second, shorter run on a system that assigns entrances to credentials shows "Select entrances".
// Saves a screenshot of each step into <screenshots dir>.
//
// With `production <endpoint> <place id> <api key>` after those arguments, the same seed runs in
// the workspace's **production** badge instead: the browser first connects a Kisi place (the
// endpoint of a Kisi simulator the test started) through the console's Connect form, then does
// seed 000 there as Kisi's model allows (access groups: Manage Access; a mobile key), and the
// phone unlocks the Front Door through Kisi. The access-grant, card and "Select entrances" steps
// need systems Kisi is not, so they run in the sandbox mode only. Both modes end with a
// keyboard-only pass over the sign-in page and phone-sized screenshots of three pages.
// Usage: node console.mjs <http base url> <admin token> <workspace name> <screenshots dir>
//          [production <endpoint> <place id> <api key>]
// Exits non-zero (with the reason) when anything is not as expected.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [base, adminToken, workspaceName, shots, mode = 'sandbox', endpoint, placeId, apiKey] =
  process.argv.slice(2);
const production = mode === 'production';
if (production && !(endpoint && placeId && apiKey)) {
  console.error('production needs <endpoint> <place id> <api key>');
  process.exit(2);
}
if (!base || !adminToken || !workspaceName || !shots) {
  console.error('usage: node console.mjs <base url> <admin token> <workspace name> <screenshots dir>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const violations = [];
const watch = (page) => page.on('console', (m) => {
  if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) violations.push(m.text());
});
const steps = [];
async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  steps.push(name);
}

try {
  const desk = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desk.newPage();
  watch(page);

  // 1. Log in.
  await page.goto(`${base}/console`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot(page, '01-sign-in');
  await page.getByLabel('API key or admin token').fill(adminToken);
  await page.getByRole('button', { name: 'Sign in' }).click();

  // 2. The workspace switcher: sandbox and production workspaces.
  await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
  await shot(page, '02-workspace-switcher');
  await page.getByRole('button', { name: new RegExp(`^${workspaceName} ${production ? 'production' : 'sandbox'}`) }).click();

  // 3. ACS Systems, with copyable acs_system_id.
  await page.getByRole('heading', { name: 'Access Systems' }).waitFor();
  const kisiName = 'Riverside Live (Kisi)';
  if (production) {
    // A production workspace connects its real systems: here a Kisi place, by the Connect form.
    await page.locator('summary', { hasText: 'Connect an access system' }).click();
    await page.getByLabel('Type').selectOption('kisi');
    await page.getByLabel('Name (optional)').fill(kisiName);
    await page.getByLabel('Time zone (optional)').fill('Europe/Berlin');
    await page.getByLabel('Settings').fill(`endpoint=${endpoint}\nplace_id=${placeId}`);
    await page.getByLabel('Credentials').fill(`api_key=${apiKey}`);
    await shot(page, '19-connect-access-system');
    await page.getByRole('button', { name: 'Connect', exact: true }).click();
    await page.getByRole('heading', { name: kisiName, level: 1 }).waitFor();
    // The first sync brings Kisi's locks and groups; wait for its entrances.
    for (let i = 0; i < 40; i++) {
      if (await page.getByText('Front Door').count() > 0) break;
      await page.waitForTimeout(250);
      await page.reload();
    }
    await page.getByRole('link', { name: 'ACS Systems' }).click();
    await page.getByRole('heading', { name: 'Access Systems' }).waitFor();
  }
  await shot(page, '03-acs-systems');

  async function addUser(systemName, name, email, shots, startsAt, endsAt) {
    await page.getByRole('link', { name: 'ACS Systems' }).click();
    // 4. The access system.
    await page.getByRole('link', { name: systemName }).click();
    await page.getByRole('heading', { name: systemName, level: 1 }).waitFor();
    if (shots) await shot(page, '04-access-system');
    // 5-6. Add user: full name, email, start and end, Continue.
    await page.getByText('Add user', { exact: true }).click();
    await page.getByLabel('Full name').fill(name);
    await page.getByLabel('Email address').fill(email);
    await page.getByLabel('Access starts').fill(startsAt);
    await page.getByLabel('Access ends').fill(endsAt);
    if (shots) await shot(page, '05-add-new-user');
    await page.getByRole('button', { name: 'Continue' }).click();
    // 7. The Users table: click the new user.
    await page.getByRole('heading', { name: 'Users' }).waitFor();
    if (shots) await shot(page, '06-users-table');
    await page.getByRole('link', { name }).click();
    await page.getByRole('heading', { name, level: 1 }).waitFor();
    // 8-11. User identity: Link to user identity, New user identity, Save.
    await page.getByText('User identity', { exact: true }).click();
    await page.getByText('Link to user identity', { exact: true }).click();
    await page.getByText('New user identity', { exact: true }).click();
    await page.getByRole('heading', { name: 'Add New User Identity' }).waitFor();
    if (shots) await shot(page, '07-new-user-identity');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.locator('section[aria-labelledby="identity-title"] a').waitFor();
  }

  const group = production ? 'Everyone' : 'All Residents';
  const door = production ? 'Front Door' : 'Main Entrance';
  await addUser(production ? kisiName : 'Riverside Apartments (Salto KS)', 'Jane Doe',
    'jane@example.com', true, '2026-01-01T09:00', '2099-12-31T18:00');
  await shot(page, '08-user-identity-linked');

  // 12. Access Groups: Manage Access, check the group, Save.
  await page.getByText('Manage Access', { exact: true }).click();
  await page.getByLabel(group).check();
  await shot(page, '09-manage-access');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('listitem').filter({ hasText: group }).waitFor();

  // 13-15. Add Credential: a mobile key; this system opens the user's groups' entrances; start & end.
  await page.getByRole('link', { name: 'Add Credential' }).click();
  await page.getByRole('heading', { name: /Add Credential for Jane Doe/ }).waitFor();
  await page.getByLabel('Mobile key').check();
  await shot(page, '10-add-credential');
  await page.getByRole('button', { name: 'Next' }).click();

  // 16. Done.
  await page.getByRole('heading', { name: 'Credential created' }).waitFor();
  await shot(page, '11-credential-done');
  await page.getByRole('link', { name: 'Done' }).click();

  // 17. The linked user identity.
  await page.locator('section[aria-labelledby="identity-title"] a').click();
  await page.getByRole('heading', { name: 'Instant Key', exact: true }).waitFor();
  const identityUrl = page.url();
  await shot(page, '12-user-identity');

  // 18. Generate Instant Key: the dialog with the link (copy) and the QR code.
  await page.getByRole('button', { name: 'Generate Instant Key' }).click();
  const dialog = page.getByRole('dialog', { name: 'Instant Key Link' });
  await dialog.waitFor();
  const link = await dialog.getByLabel('Instant Key link', { exact: true }).inputValue();
  if (!/\/ik\//.test(link)) throw new Error(`the dialog shows no Instant Key link: ${link}`);
  const qr = await dialog.getByRole('img', { name: 'QR code of the Instant Key link' })
    .evaluate((img) => img.complete && img.naturalWidth > 0);
  if (!qr) throw new Error('the QR code did not render');
  await shot(page, '13-instant-key-link');

  // The person opens the link on a phone and unlocks.
  const phoneContext = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const phone = await phoneContext.newPage();
  watch(phone);
  // The link names the server's public URL; this test's server listens on another port.
  const response = await phone.goto(base + new URL(link).pathname);
  if (response.status() !== 200) throw new Error(`the Instant Key page answered ${response.status()}`);
  await phone.getByRole('heading', { name: /Jane Doe/ }).waitFor();
  await phone.getByRole('button', { name: 'Use this key on this phone' }).tap();
  await phone.getByRole('button', { name: `Unlock ${door}` }).waitFor({ timeout: 15000 });
  await phone.getByRole('button', { name: `Unlock ${door}` }).tap();
  await phone.getByRole('status').filter({ hasText: `${door} is unlocked.` })
    .waitFor({ timeout: 15000 });
  await shot(phone, '14-phone-unlocked');

  if (!production) await sandboxOnly();

  async function sandboxOnly() {
  // Beyond the seed: an access grant with a card, encoded at the desk; its doors turn granted.
  await page.getByRole('link', { name: 'Access grants' }).click();
  await page.getByRole('link', { name: 'New access grant' }).click();
  await page.getByLabel('Who').selectOption({ label: 'Jane Doe' });
  await page.getByLabel('Room 101 · Harbour Hotel (Salto Space)').check();
  await page.getByLabel('Card', { exact: true }).check();
  await shot(page, '16-new-access-grant');
  await page.getByRole('button', { name: 'Create access grant' }).click();
  // The card can be encoded once the system issued it: until then the refusal says so.
  let encoded = false;
  for (let i = 0; i < 20 && !encoded; i++) {
    await page.getByRole('button', { name: 'Encode card' }).click();
    await page.waitForLoadState();
    encoded = /\/console\/attempts\//.test(page.url());
    if (!encoded) await page.waitForTimeout(500);
  }
  if (!encoded) throw new Error('the card could not be encoded');
  await page.getByRole('status').filter({ hasText: 'Done: success' }).waitFor({ timeout: 20000 });
  await shot(page, '17-card-encoded');
  await page.getByRole('link', { name: 'Back to the access grant' }).click();
  await page.locator('.state.granted').first().waitFor({ timeout: 20000 });
  await shot(page, '18-grant-doors-granted');

  // The grant is edited (name, end), found again with the list's filter, its events shown, and
  // deleted after a confirmation.
  await page.getByRole('link', { name: 'Edit', exact: true }).click();
  await page.getByRole('heading', { name: /^Edit / }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('Jane Doe, late checkout');
  await page.getByLabel('Ends', { exact: true }).fill('2099-12-31T12:00');
  await shot(page, '23-edit-access-grant');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByRole('heading', { name: 'Jane Doe, late checkout', level: 1 }).waitFor();
  if (!(await page.getByText('until Thu 31 Dec 2099, 12:00 UTC').count())) {
    throw new Error('the new end is not shown on the grant');
  }
  await page.getByRole('link', { name: 'Access grants' }).first().click();
  await page.getByLabel('Who', { exact: true }).selectOption({ label: 'Jane Doe' });
  await page.getByLabel('Entrance', { exact: true }).selectOption({ label: 'Room 101 · Harbour Hotel (Salto Space)' });
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.getByRole('link', { name: 'Jane Doe, late checkout' }).waitFor();
  if (!/user_identity_id=/.test(page.url())) throw new Error(`the filter is not in the URL: ${page.url()}`);
  await shot(page, '24-access-grants-filtered');
  await page.getByRole('link', { name: 'Jane Doe, late checkout' }).click();
  await page.getByRole('link', { name: 'Events of this grant' }).click();
  await page.getByRole('heading', { name: 'Events' }).waitFor();
  await page.locator('code', { hasText: 'access_grant.access_times_changed' }).first().waitFor();
  await page.goBack();
  await page.getByRole('link', { name: 'Delete…' }).click();
  await page.getByRole('heading', { name: 'Delete Jane Doe, late checkout?' }).waitFor();
  await shot(page, '25-delete-access-grant');
  await page.getByRole('button', { name: 'Delete access grant' }).click();
  await page.getByRole('status').filter({ hasText: 'The access grant was deleted' }).waitFor();
  if (await page.getByRole('link', { name: 'Jane Doe, late checkout' }).count()) {
    throw new Error('the deleted grant is still listed');
  }

  // A system that assigns entrances to credentials: "Select entrances", then start & end.
  await addUser('Grand Central Hotel (Visionline)', 'John Roe', 'john@example.com', false,
    '2026-01-01T15:00', '2099-01-05T11:00');
  await page.getByRole('link', { name: 'Add Credential' }).click();
  await page.getByLabel('Mobile key').check();
  await page.getByLabel('Room 301').check();
  await page.getByLabel('Main Entrance').check();
  await shot(page, '15-select-entrances');
  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByRole('heading', { name: 'Credential created' }).waitFor();
  }

  // Sign out: the console is closed again.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();

  // Keyboard only: Tab reaches the labelled secret field (past the skip link), then the submit
  // button, each with a visible focus ring; typing and Enter sign in.
  const focused = () => page.evaluate(() => {
    const el = document.activeElement;
    const style = getComputedStyle(el);
    return {
      tag: el.tagName, id: el.id, text: (el.textContent || '').trim(),
      label: el.labels && el.labels.length > 0 ? el.labels[0].textContent.trim() : '',
      ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
    };
  });
  let field = null;
  for (let i = 0; i < 6 && !field; i++) {
    await page.keyboard.press('Tab');
    const f = await focused();
    if (f.id === 'f-token') field = f;
  }
  if (!field) throw new Error('Tab never reached the sign-in field');
  if (field.label !== 'API key or admin token') throw new Error(`the field's label: ${field.label}`);
  if (!field.ring) throw new Error('the focused field shows no focus ring');
  await page.keyboard.type(adminToken);
  await page.keyboard.press('Tab');
  const submit = await focused();
  if (submit.tag !== 'BUTTON' || submit.text !== 'Sign in' || !submit.ring) {
    throw new Error(`Tab after the field reached ${JSON.stringify(submit)}, not the Sign in button`);
  }
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Workspaces' }).waitFor();

  // Phone-sized (390x844): sign-in, the systems list and the identity page.
  const small = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const mobile = await small.newPage();
  watch(mobile);
  await mobile.goto(`${base}/console/sign-in`);
  await mobile.getByRole('heading', { name: 'Sign in' }).waitFor();
  await shot(mobile, '20-phone-sign-in');
  await mobile.getByLabel('API key or admin token').fill(adminToken);
  await mobile.getByRole('button', { name: 'Sign in' }).tap();
  await mobile.getByRole('button', { name: new RegExp(`^${workspaceName} ${production ? 'production' : 'sandbox'}`) }).tap();
  await mobile.getByRole('heading', { name: 'Access Systems' }).waitFor();
  await shot(mobile, '21-phone-acs-systems');
  await mobile.goto(identityUrl);
  await mobile.getByRole('heading', { name: 'Instant Key', exact: true }).waitFor();
  await shot(mobile, '22-phone-user-identity');
  // No sideways scrolling at 390 CSS pixels (a phone zooms out to fit wider content instead).
  for (const url of [`${base}/console/systems`, identityUrl, `${base}/console/grants`, `${base}/console/events`]) {
    await mobile.goto(url);
    const width = await mobile.evaluate(() => document.documentElement.scrollWidth);
    if (width > 390) throw new Error(`${url} is ${width}px wide on a 390px phone`);
  }
  // Tables stack into cards on a phone: each cell shows its column's label above its value.
  await mobile.goto(`${base}/console/systems`);
  const label = await mobile.locator('table tbody td').first()
    .evaluate((td) => getComputedStyle(td, '::before').content);
  if (label !== '"Name"') throw new Error(`a stacked cell shows no column label: ${label}`);

  if (violations.length > 0) throw new Error(`Content-Security-Policy violations: ${violations.join('; ')}`);
  console.log(JSON.stringify({ ok: true, steps }));
} finally {
  await browser.close();
}
