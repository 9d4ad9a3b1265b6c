// converse_test.js — drives headless Debian Chromium (playwright-core) through
// one Converse.js page: the visitor logs in (anonymous over WebSocket or BOSH,
// or a pre-bound BOSH session), sends a message to the support account and
// waits until the support desk's reply is in the page's DOM.
// Run by tests/integration/test_browser.py:
//   node converse_test.js URL TEXT REPLY SCREENSHOT
// Exit 0 when the reply appeared; 1 with the reason (and the page's console
// log) otherwise. A hard deadline bounds everything.
const { chromium } = require('playwright-core');

const [url, text, reply, shot] = process.argv.slice(2);
const DEADLINE_MS = 60000;

async function main() {
  const userDir = require('fs').mkdtempSync(require('path').join(require('os').tmpdir(), 'sb-chromium-'));
  // A fresh profile directory each run (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1100, height: 760 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const logs = [];
  try {
    const page = browser.pages()[0] || await browser.newPage();
    page.on('console', (m) => logs.push('[' + m.type() + '] ' + m.text()));
    page.on('pageerror', (e) => logs.push('[pageerror] ' + e.message));
    await page.goto(url);
    const box = page.locator('textarea.chat-textarea').first();
    await box.waitFor({ state: 'visible', timeout: 30000 });
    await box.fill(text);
    await box.press('Enter');
    await page.locator('.chat-msg__text', { hasText: reply }).first()
      .waitFor({ state: 'visible', timeout: 20000 });
    await page.screenshot({ path: shot });
    console.log('reply shown: ' + reply);
  } catch (e) {
    try {
      const pages = browser.pages();
      if (pages.length) await pages[0].screenshot({ path: shot });
    } catch (_) { /* best effort */ }
    console.error('FAILED: ' + e.message);
    console.error(logs.slice(-40).join('\n'));
    process.exitCode = 1;
  } finally {
    await browser.close();
    require('fs').rmSync(userDir, { recursive: true, force: true });
  }
}

setTimeout(() => { console.error('FAILED: deadline'); process.exit(2); }, DEADLINE_MS).unref();
main();
