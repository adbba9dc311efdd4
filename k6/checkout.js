// The whole purchase path at a steady arrival rate: lock, then confirm (pay), cancel,
// or walk away and let the hold expire.
//
//   k6 run k6/checkout.js
//   k6 run -e RATE=100 -e DURATION=1m -e CUSTOMERS=100 k6/checkout.js
//
// Env: BASE_URL (http://127.0.0.1:8080), RATE (checkouts started per second, 50),
// DURATION (30s), CUSTOMERS (accounts to spread the load over, 50), STOCK (units of
// the product, 1000000), CONFIRM_SHARE (0.7) and CANCEL_SHARE (0.2) of the holds; the
// rest are left to expire after the service's HOLD_TTL. STORE_ID, ADMIN_EMAIL,
// ADMIN_PASSWORD, RUN_TAG as in flash_sale.js. PAYMENT_WEBHOOK_SECRET: for a service
// with PAYMENT_CONFIRMATION=webhook, pay through the signed payment webhook instead of
// confirmOrder (it must answer 200 CONFIRMED).
//
// Each step's check reads the GraphQL body: lockOrder must answer HELD, confirmOrder
// CONFIRMED, cancelOrder CANCELLED. teardown fails the run when the product's
// available units are out of [0, STOCK].

import { check, fail } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  adminToken, available, createProduct, customers, errorCode, gql, lockOrder, payOrder,
  PAYMENT_WEBHOOK_SECRET, runTag,
} from './lib.js';

const RATE = parseInt(__ENV.RATE || '50', 10);
const CUSTOMERS = parseInt(__ENV.CUSTOMERS || '50', 10);
const STOCK = parseInt(__ENV.STOCK || '1000000', 10);
const CONFIRM_SHARE = parseFloat(__ENV.CONFIRM_SHARE || '0.7');
const CANCEL_SHARE = parseFloat(__ENV.CANCEL_SHARE || '0.2');

const confirmed = new Counter('checkout_confirmed');
const cancelled = new Counter('checkout_cancelled');
const abandoned = new Counter('checkout_abandoned');
const failed = new Counter('checkout_failed');
const checkoutTime = new Trend('checkout_duration', true);

export const options = {
  setupTimeout: __ENV.SETUP_TIMEOUT || '5m',
  scenarios: {
    checkout: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(10, RATE),
      maxVUs: Math.max(50, RATE * 4),
    },
  },
  thresholds: {
    checks: ['rate==1'],
    checkout_failed: ['count==0'],
    dropped_iterations: ['count==0'],
    'http_req_duration{name:lockOrder}': ['p(99)<500'],
  },
};

const CONFIRM = `mutation confirmOrder($input: ConfirmOrderInput!) {
  confirmOrder(input: $input) { order { id status confirmedAt } errors { code } } }`;
const CANCEL = `mutation cancelOrder($id: ID!) {
  cancelOrder(orderId: $id) { order { id status } errors { code } } }`;

function statusOf(result, field) {
  const payload = result.body && !result.body.errors && result.body.data && result.body.data[field];
  return payload && payload.order ? payload.order.status : errorCode(payload) || 'NO_PAYLOAD';
}

// Runs one step on a held order; true when the payload says `expected`.
function step(token, query, variables, field, expected, counter) {
  const result = gql(query, variables, token);
  const status = statusOf(result, field);
  if (!check(status, { [`${field} ${expected}`]: (s) => s === expected })) {
    failed.add(1);
    console.error(`${field}: ${result.response.body}`);
    return false;
  }
  counter.add(1);
  return true;
}

// Pays through the signed webhook, as the provider would; true when it says CONFIRMED.
function paid(order, key) {
  const result = payOrder(order.id, order.totalCents, `evt-${key}`);
  const status = result.body && result.response.status === 200 ? result.body.status : undefined;
  if (!check(status, { 'payment webhook CONFIRMED': (s) => s === 'CONFIRMED' })) {
    failed.add(1);
    console.error(`payment webhook: ${result.response.status}: ${result.response.body}`);
    return false;
  }
  confirmed.add(1);
  return true;
}

export function setup() {
  const tag = runTag();
  const admin = adminToken();
  const productId = createProduct(admin, { name: `Checkout ${tag} ${Date.now()}`, stock: STOCK });
  const tokens = customers(`checkout-${tag}`, CUSTOMERS, 16);
  return { productId, tokens };
}

export default function (data) {
  const started = Date.now();
  const token = data.tokens[Math.floor(Math.random() * data.tokens.length)];
  const key = `checkout-${__VU}-${__ITER}-${started}`;
  const lock = lockOrder(token, data.productId, 1, key);
  const order = lock.payload && lock.payload.order;
  if (!check(lock, { 'lockOrder HELD': () => order !== null && order.status === 'HELD' })) {
    failed.add(1);
    console.error(`lockOrder: ${lock.response.status}: ${lock.response.body}`);
    return;
  }
  const roll = Math.random();
  let finished = true;
  if (roll < CONFIRM_SHARE && PAYMENT_WEBHOOK_SECRET) {
    finished = paid(order, key);
  } else if (roll < CONFIRM_SHARE) {
    const input = { orderId: order.id, paymentReference: `pay-${key}` };
    finished = step(token, CONFIRM, { input }, 'confirmOrder', 'CONFIRMED', confirmed);
  } else if (roll < CONFIRM_SHARE + CANCEL_SHARE) {
    finished = step(token, CANCEL, { id: order.id }, 'cancelOrder', 'CANCELLED', cancelled);
  } else {
    abandoned.add(1);
  }
  if (finished) {
    checkoutTime.add(Date.now() - started);
  }
}

export function teardown(data) {
  const left = available(data.productId);
  console.log(`checkout: ${left} of ${STOCK} units available at the end`);
  if (left < 0 || left > STOCK) {
    fail(`available ${left} is outside [0, ${STOCK}]`);
  }
}
