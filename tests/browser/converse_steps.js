// converse_steps.js — drives one Converse.js page in headless Debian Chromium
// (playwright-core) through a list of steps, for the tests that need more
// than converse_test.js's one message: a room at conference.DOMAIN, a file
// sent with XEP-0363. Run by tests/integration/test_browser.py:
//   node converse_steps.js URL SCREENSHOT STEPS_JSON
// Steps, in order (each bounded):
//   {"send": TEXT}    type TEXT into the open chat's box and press Enter
//   {"see": TEXT}     wait until a message containing TEXT is in the page
//   {"upload": PATH}  choose PATH in the chat toolbar's file input (XEP-0363:
//                     Converse asks for a slot, PUTs, then sends the URL)
//   {"seeLink": PREFIX} wait until a message links to a URL starting so
// Certificate errors are ignored: the test stack's certificate is
// self-signed (the upload PUT goes to sb-bosh's HTTPS listener).
// Exit 0 when every step passed; 1 with the reason and the page's console.
const { chromium } = require('playwright-core');

const [url, shot, stepsJson] = process.argv.slice(2);
const steps = JSON.parse(stepsJson);
const DEADLINE_MS = 80000;

async function step(page, s) {
  if (s.send !== undefined) {
    const box = page.locator('textarea.chat-textarea').first();
    await box.waitFor({ state: 'visible', timeout: 30000 });
    await box.fill(s.send);
    await box.press('Enter');
  } else if (s.see !== undefined) {
    await page.locator('.chat-msg__text', { hasText: s.see }).first()
      .waitFor({ state: 'visible', timeout: 20000 });
  } else if (s.upload !== undefined) {
    const input = page.locator('input.fileupload').first();
    await input.waitFor({ state: 'attached', timeout: 30000 });
    await input.setInputFiles(s.upload);
  } else if (s.seeLink !== undefined) {
    await page.locator('.chat-msg__text a[href^="' + s.seeLink + '"], .chat-msg__media a[href^="'
                       + s.seeLink + '"], .chat-msg a[href^="' + s.seeLink + '"]').first()
      .waitFor({ state: 'attached', timeout: 30000 });
  } else {
    throw new Error('unknown step ' + JSON.stringify(s));
  }
  console.log('step done: ' + JSON.stringify(s));
}

async function main() {
  const os = require('os'), fs = require('fs'), path = require('path');
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-chromium-'));
  const browser = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    ignoreHTTPSErrors: true,
    viewport: { width: 1100, height: 760 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--ignore-certificate-errors'],
  });
  const logs = [];
  try {
    const page = browser.pages()[0] || await browser.newPage();
    page.on('console', (m) => logs.push('[' + m.type() + '] ' + m.text()));
    page.on('pageerror', (e) => logs.push('[pageerror] ' + e.message));
    page.on('requestfailed', (r) => logs.push('[requestfailed] ' + r.method() + ' ' + r.url() + ' '
                                              + (r.failure() ? r.failure().errorText : '')));
    await page.goto(url);
    for (const s of steps) await step(page, s);
    await page.screenshot({ path: shot });
  } catch (e) {
    try {
      const pages = browser.pages();
      if (pages.length) await pages[0].screenshot({ path: shot });
    } catch (_) { /* best effort */ }
    console.error('FAILED: ' + e.message);
    console.error(logs.slice(-60).join('\n'));
    process.exitCode = 1;
  } finally {
    await browser.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

setTimeout(() => { console.error('FAILED: deadline'); process.exit(2); }, DEADLINE_MS).unref();
main();
