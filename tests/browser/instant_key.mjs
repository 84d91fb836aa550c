// Opens an Instant Key link in headless Chromium as a phone would, after a link previewer's HEAD:
// checks that the page lists the doors, taps "Use this key on this phone", then Unlock on the door
// that unlocks remotely and waits for the outcome, then saves a screenshot. Usage: node instant_key.mjs <instant key url> <screenshot.png>
// Exits non-zero (with the reason) when anything is not as expected.
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node instant_key.mjs <url> <screenshot.png>');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // The machine has no network beyond loopback; these keep Chromium from trying.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  // The page sends a strict Content-Security-Policy: any violation is a failure.
  const violations = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) violations.push(m.text());
  });
  // A link previewer's HEAD claims nothing.
  const preview = await page.request.head(url);
  if (preview.status() !== 200) throw new Error(`a preview answered ${preview.status()}`);
  const response = await page.goto(url);
  if (response.status() !== 200) throw new Error(`page answered ${response.status()}`);
  const styled = await page.evaluate(() => {
    const sheet = document.querySelector('style')?.sheet;
    return !!sheet && sheet.cssRules.length > 0;
  });
  if (!styled) throw new Error('the page style did not apply under its Content-Security-Policy');
  await page.getByRole('heading', { name: /Jane Doe/ }).waitFor();
  await page.getByRole('heading', { name: 'Room 301' }).waitFor();
  await page.getByRole('heading', { name: 'Main Entrance' }).waitFor();
  // The key is this phone's only once it says so.
  await page.getByRole('button', { name: 'Use this key on this phone' }).tap();
  await page.waitForURL(url);
  await page.getByRole('heading', { name: 'Main Entrance' }).waitFor();
  if (await page.getByRole('button', { name: 'Use this key on this phone' }).count() !== 0) {
    throw new Error('the page still offers the claim after it');
  }
  await page.getByRole('button', { name: 'Unlock Main Entrance' }).tap();
  await page.getByRole('status').filter({ hasText: 'Main Entrance is unlocked.' }).waitFor({ timeout: 15000 });
  await page.screenshot({ path: shot, fullPage: true });
  if (violations.length > 0) throw new Error(`Content-Security-Policy violations: ${violations.join('; ')}`);
  console.log(JSON.stringify({ ok: true, title: await page.title(), url: page.url().replace(/\/ik\/[^?]+/, '/ik/<token>') }));
} finally {
  await browser.close();
}
