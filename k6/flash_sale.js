// The flash sale: many buyers race for few units. Each iteration is one buyer (a
// customer account of its own) trying once to hold QUANTITY units of one product.
//
//   k6 run k6/flash_sale.js                           # 2000 buyers, 100 units
//   k6 run -e BUYERS=500 -e UNITS=20 -e VUS=200 k6/flash_sale.js
//
// Env: BASE_URL (http://127.0.0.1:8080), BUYERS (2000), UNITS (100), QUANTITY (1),
// VUS (concurrent buyers, 500), STORE_ID (1), ADMIN_EMAIL / ADMIN_PASSWORD (the seed's
// admin), RUN_TAG (names this run's accounts and product; fixed = reuse accounts),
// REGISTER_PARALLEL (16). Run the service with its default HOLD_TTL (10m): a hold
// that expires mid-run would hand its units back and break the count below.
//
// The run fails (exit code 99 or 107) when a buyer got anything but HELD or
// INSUFFICIENT_STOCK, when more units were held than existed, or when the units the
// service says are gone differ from what the buyers were told they hold.

import exec from 'k6/execution';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import {
  adminToken, available, createProduct, customers, errorCode, lockOrder, runTag,
} from './lib.js';

const BUYERS = parseInt(__ENV.BUYERS || '2000', 10);
const UNITS = parseInt(__ENV.UNITS || '100', 10);
const QUANTITY = parseInt(__ENV.QUANTITY || '1', 10);
const VUS = Math.min(BUYERS, parseInt(__ENV.VUS || '500', 10));
// Every buyer wants QUANTITY units; when they want more than there is, all is held.
const EXPECTED_HELD = Math.min(UNITS - (UNITS % QUANTITY), BUYERS * QUANTITY);

const heldUnits = new Counter('flash_held_units');
const soldOut = new Counter('flash_sold_out');
const unexpected = new Counter('flash_unexpected');

export const options = {
  setupTimeout: __ENV.SETUP_TIMEOUT || '10m',
  scenarios: {
    flash_sale: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: BUYERS,
      maxDuration: __ENV.MAX_DURATION || '5m',
    },
  },
  thresholds: {
    // Never more units held than existed, and no unit left behind while buyers were refused.
    flash_held_units: [`count<=${UNITS}`, `count>=${EXPECTED_HELD}`],
    flash_unexpected: ['count==0'],
    checks: ['rate==1'],
  },
};

export function setup() {
  const tag = runTag();
  const admin = adminToken();
  const productId = createProduct(admin, {
    name: `Flash sale ${tag} ${Date.now()}`,
    stock: UNITS,
    maxPerCustomer: QUANTITY,
  });
  const tokens = customers(`flash-${tag}`, BUYERS, parseInt(__ENV.REGISTER_PARALLEL || '16', 10));
  console.log(`flash sale: product ${productId}, ${UNITS} units, ${tokens.length} buyers`);
  return { productId, tokens };
}

export default function (data) {
  const buyer = exec.scenario.iterationInTest;
  const result = lockOrder(data.tokens[buyer], data.productId, QUANTITY);
  const payload = result.payload;
  const code = errorCode(payload);
  const held = payload && payload.order && payload.order.status === 'HELD';
  const ok = check(result, {
    'lockOrder answered with a payload': () => payload !== null,
    'HELD with heldUntil, or INSUFFICIENT_STOCK': () =>
      (held && payload.order.heldUntil !== null && payload.errors.length === 0) ||
      (!payload.order && code === 'INSUFFICIENT_STOCK'),
  });
  if (held) {
    heldUnits.add(QUANTITY);
  } else if (code === 'INSUFFICIENT_STOCK') {
    soldOut.add(1);
  }
  if (!ok) {
    unexpected.add(1);
    console.error(`buyer ${buyer}: HTTP ${result.response.status}: ${result.response.body}`);
  }
}

export function teardown(data) {
  const left = available(data.productId);
  const taken = UNITS - left;
  console.log(`flash sale: ${UNITS} units, ${left} available, ${taken} held; expected ${EXPECTED_HELD}`);
  if (left < 0 || taken > UNITS) {
    fail(`OVERSOLD: ${taken} units held of ${UNITS}`);
  }
  if (taken !== EXPECTED_HELD) {
    fail(`the service holds ${taken} units but ${EXPECTED_HELD} were expected`);
  }
}
