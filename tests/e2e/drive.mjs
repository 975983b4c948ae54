// Drives the qalign demo page (demo/app.py) in Debian's headless Chromium through playwright-core:
// selects the models, types a question and passages, clicks Generate, waits for every model's answer,
// saves a full-page screenshot and prints what the page showed as one JSON line on stdout (with `streamed`: the
// partial answers the first model's column showed while it was generating).
//
// Environment: DEMO_URL (required), DEMO_SCREENSHOT (required, a .png path), DEMO_MODELS (JSON list of labels,
// default ["base"]), DEMO_QUESTION, DEMO_PASSAGES, DEMO_GOLDS, DEMO_MAX_NEW_TOKENS, DEMO_TIMEOUT_MS (default
// 120000), DEMO_VIEWPORT (default 1400x900), CHROMIUM (default /usr/bin/chromium). No browser is downloaded:
// playwright-core drives the installed one.
import { chromium } from 'playwright-core';

const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const url = required('DEMO_URL');
const screenshot = required('DEMO_SCREENSHOT');
const models = JSON.parse(process.env.DEMO_MODELS ?? '["base"]');
const question = process.env.DEMO_QUESTION ?? 'who wrote pride and prejudice';
const passages = process.env.DEMO_PASSAGES ?? '';
const golds = process.env.DEMO_GOLDS ?? '';
const maxNewTokens = process.env.DEMO_MAX_NEW_TOKENS ?? '';
const timeout = Number(process.env.DEMO_TIMEOUT_MS ?? 120000);
const [width, height] = (process.env.DEMO_VIEWPORT ?? '1400x900').split('x').map(Number);

// Streamlit reruns the script after each widget change; wait until it is no longer "Running".
async function settle(page) {
  await page.waitForTimeout(250);
  await page.waitForFunction(
    () => !(document.querySelector('[data-testid="stStatusWidget"]')?.innerText ?? '').includes('Running'),
    null, { timeout },
  );
}

async function selectModels(page) {
  const remove = page.locator('.st-key-models button[aria-label^="Remove "]');
  while (await remove.count() > 0) {
    await remove.first().click();
    await settle(page);
  }
  for (const label of models) {
    const input = page.locator('.st-key-models input');
    await input.click();
    await input.fill(label);
    await page.getByRole('option', { name: label, exact: true }).click();
    await settle(page);
  }
  await page.keyboard.press('Escape');
  const chosen = await page.locator('.st-key-models [data-tag] span[title]').allInnerTexts();
  if (JSON.stringify(chosen) !== JSON.stringify(models)) {
    throw new Error(`selected ${JSON.stringify(chosen)}, wanted ${JSON.stringify(models)}`);
  }
}

async function type(page, selector, text) {
  const field = page.locator(selector);
  await field.fill(text);
  await field.press('Tab'); // Streamlit commits a text field's value when it loses focus
  await settle(page);
}

// Records the texts the first model's column shows before its final answer block appears: the streamed prefixes.
function watchStreaming() {
  const partials = new Set();
  new MutationObserver(() => {
    const column = [...document.querySelectorAll('[data-testid="stColumn"]')].find((c) => c.querySelector('h3'));
    if (!column || column.querySelector('.st-key-answer_0')) return;
    const blocks = [...column.querySelectorAll('[data-testid="stMarkdownContainer"]')]
      .filter((block) => !block.closest('[data-testid="stHeading"]'));
    const text = blocks.length ? blocks[blocks.length - 1].innerText.trim() : '';
    if (text && !text.startsWith('waiting for')) partials.add(text);
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
  window.demoPartials = partials;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: CHROMIUM_FLAGS, timeout,
  });
  const page = await browser.newPage({ viewport: { width, height } });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  try {
    await page.goto(url, { timeout });
    await page.locator('.st-key-generate button').waitFor({ timeout });
    await settle(page);
    await selectModels(page);
    await type(page, '.st-key-question input', question);
    await type(page, '.st-key-passages textarea', passages);
    await type(page, '.st-key-golds input', golds);
    if (maxNewTokens) await type(page, '.st-key-max_new_tokens input', maxNewTokens);
    await page.evaluate(watchStreaming);
    await page.locator('.st-key-generate button').click();
    const answers = [];
    for (let index = 0; index < models.length; index += 1) {
      const box = page.locator(`.st-key-answer_${index}`);
      await box.getByText('latency', { exact: false }).waitFor({ timeout });
      const column = page.locator('[data-testid="stColumn"]', { has: box });
      answers.push({ label: await column.locator('h3').first().innerText(), text: await box.innerText() });
    }
    await settle(page);
    await page.locator('[data-testid="stTable"]').waitFor({ timeout });
    const errors = await page.locator('[data-testid="stAlertContentError"]').allInnerTexts();
    await page.screenshot({ path: screenshot, fullPage: true });
    const streamed = await page.evaluate(() => [...window.demoPartials]);
    console.log(JSON.stringify({ models, answers, streamed, errors, pageErrors }));
  } catch (error) {
    await page.screenshot({ path: screenshot.replace(/\.png$/, '') + '-failed.png', fullPage: true }).catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`drive.mjs: ${error.stack ?? error}`);
  process.exit(1);
});
