// Opens GraphiQL in headless Chromium with every address but the service's cut off, types
// a query into the editor, runs it and waits for the expected text in the result pane.
//   node graphiql-offline.mjs http://127.0.0.1:PORT/graphql '<query>' '<expected text>' [screenshot.png]
// Exits 0 when the query ran and nothing was requested from anywhere else.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';

const [url, query, expected, screenshot] = process.argv.slice(2);
if (!url || !query || !expected) {
  console.error('usage: node graphiql-offline.mjs <graphql url> <query> <expected text> [screenshot]');
  process.exit(2);
}
const origin = new URL(url).origin;
const executablePath = ['/usr/lib/chromium/chromium', '/usr/bin/chromium'].find(existsSync);
if (!executablePath) {
  console.error('chromium is not installed (scripts/test-tools installs it)');
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    // No name resolves but the service's address, and every other connection goes to a
    // proxy that refuses: the page has no way out.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    '--proxy-server=127.0.0.1:9',
    '--no-sandbox',
  ],
});
const outside = [];
const problems = [];
try {
  const page = await browser.newPage();
  await page.route('**/*', (route) => {
    const requested = route.request().url();
    if (requested.startsWith(origin) || requested.startsWith('data:')) {
      return route.continue();
    }
    outside.push(requested);
    return route.abort('internetdisconnected');
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });

  const response = await page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  if (response.status() !== 200) throw new Error(`GET ${url}: status ${response.status()}`);
  const editor = page.locator('.graphiql-query-editor .CodeMirror');
  await editor.waitFor({ state: 'visible', timeout: 30_000 });
  console.log('editor on the page');

  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(query);
  const typed = await page.evaluate(
    () => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.getValue(),
  );
  if (typed.trim() !== query.trim()) throw new Error(`the editor holds ${JSON.stringify(typed)}`);
  console.log(`typed: ${typed}`);

  await page.locator('.graphiql-execute-button').click();
  const result = page.locator('.graphiql-response');
  await result.getByText(expected).first().waitFor({ timeout: 30_000 });
  console.log(`result shows ${JSON.stringify(expected)}`);
  if (screenshot) await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
if (outside.length > 0) {
  console.error(`requested from outside the service:\n${outside.join('\n')}`);
  process.exit(1);
}
if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('GraphiQL works offline');
