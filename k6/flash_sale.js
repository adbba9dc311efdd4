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
//
// WAITLIST=1 measures the waitlist under load: every buyer turned away joins the
// waitlist, then RELEASES (20) of the holds are cancelled one by one while POLLERS (50)
// bots hammer lockOrder for the same product. Every released unit should reach a
// waitlisted customer (as a HELD order made inside the cancel), none a poller:
// flash_released_units, flash_poller_units (threshold: 0) and flash_waitlisted say how
// many went where.
//   k6 run -e WAITLIST=1 -e BUYERS=500 -e UNITS=50 k6/flash_sale.js

import exec from 'k6/execution';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import {
  adminToken, available, cancelOrder, createProduct, customers, errorCode, joinWaitlist,
  lockOrder, runTag,
} from './lib.js';

const BUYERS = parseInt(__ENV.BUYERS || '2000', 10);
const UNITS = parseInt(__ENV.UNITS || '100', 10);
const QUANTITY = parseInt(__ENV.QUANTITY || '1', 10);
const VUS = Math.min(BUYERS, parseInt(__ENV.VUS || '500', 10));

const heldUnits = new Counter('flash_held_units');
const soldOut = new Counter('flash_sold_out');
const unexpected = new Counter('flash_unexpected');
const waitlisted = new Counter('flash_waitlisted');
const releasedUnits = new Counter('flash_released_units');
const pollerUnits = new Counter('flash_poller_units');

const WAITLIST = __ENV.WAITLIST === '1';
// How many holds are given back, and how many bots poll for them meanwhile.
const RELEASES = parseInt(__ENV.RELEASES || '20', 10);
const POLLERS = parseInt(__ENV.POLLERS || '50', 10);
// The release phase starts once the sale is over.
const RELEASE_AFTER = __ENV.RELEASE_AFTER || '60s';
// With WAITLIST the releasing holds take their units before the sale opens.
const SALE_UNITS = WAITLIST ? UNITS - RELEASES * QUANTITY : UNITS;
// Every buyer wants QUANTITY units; when they want more than there is, all is held.
const EXPECTED_HELD = Math.min(SALE_UNITS - (SALE_UNITS % QUANTITY), BUYERS * QUANTITY);

const scenarios = {
  flash_sale: {
    executor: 'shared-iterations',
    vus: VUS,
    iterations: BUYERS,
    maxDuration: __ENV.MAX_DURATION || '5m',
  },
};
const thresholds = {
  // Never more units held than existed, and no unit left behind while buyers were refused.
  flash_held_units: [`count<=${SALE_UNITS}`, `count>=${EXPECTED_HELD}`],
  flash_unexpected: ['count==0'],
  checks: ['rate==1'],
};
if (WAITLIST) {
  scenarios.release = {
    executor: 'per-vu-iterations',
    exec: 'release',
    vus: 1,
    iterations: 1,
    startTime: RELEASE_AFTER,
  };
  scenarios.pollers = {
    executor: 'constant-vus',
    exec: 'poll',
    vus: POLLERS,
    duration: __ENV.POLL_DURATION || '30s',
    startTime: RELEASE_AFTER,
  };
  // The goal: every released unit went to a waitlisted customer.
  thresholds.flash_poller_units = ['count==0'];
}

export const options = {
  setupTimeout: __ENV.SETUP_TIMEOUT || '10m',
  scenarios,
  thresholds,
};

export function setup() {
  const tag = runTag();
  const admin = adminToken();
  const productId = createProduct(admin, {
    name: `Flash sale ${tag} ${Date.now()}`,
    stock: UNITS,
    maxPerCustomer: QUANTITY,
  });
  const parallel = parseInt(__ENV.REGISTER_PARALLEL || '16', 10);
  const tokens = customers(`flash-${tag}`, BUYERS, parallel);
  console.log(`flash sale: product ${productId}, ${UNITS} units, ${tokens.length} buyers`);
  if (!WAITLIST) {
    return { productId, tokens };
  }
  // The holds given back later: taken here, before the sale, by accounts of their own.
  const holders = customers(`flash-holder-${tag}`, RELEASES, parallel);
  const releases = holders.map((token) => {
    const held = lockOrder(token, productId, QUANTITY).payload;
    if (!held || !held.order) {
      fail(`a releasing hold was refused: ${JSON.stringify(held)}`);
    }
    return { token, orderId: held.order.id };
  });
  const pollers = customers(`flash-poller-${tag}`, POLLERS, parallel);
  return { productId, tokens, releases, pollers };
}

// WAITLIST: gives the releasing holds back one by one while the pollers run.
export function release(data) {
  for (const { token, orderId } of data.releases) {
    const cancelled = cancelOrder(token, orderId);
    if (cancelled && cancelled.order && cancelled.order.status === 'CANCELLED') {
      releasedUnits.add(QUANTITY);
    } else {
      console.error(`cancel of ${orderId}: ${JSON.stringify(cancelled)}`);
    }
  }
}

// WAITLIST: a bot polling lockOrder for the sold-out product; every unit it gets is one
// the waitlist did not.
export function poll(data) {
  const token = data.pollers[exec.vu.idInTest % data.pollers.length];
  const result = lockOrder(token, data.productId, QUANTITY);
  if (result.payload && result.payload.order) {
    pollerUnits.add(QUANTITY);
    cancelOrder(token, result.payload.order.id);
  }
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
    if (WAITLIST) {
      const joined = joinWaitlist(data.tokens[buyer], data.productId, QUANTITY);
      if (joined && joined.entry) {
        waitlisted.add(1);
      }
    }
  }
  if (!ok) {
    unexpected.add(1);
    console.error(`buyer ${buyer}: HTTP ${result.response.status}: ${result.response.body}`);
  }
}

export function teardown(data) {
  const left = available(data.productId);
  // In WAITLIST mode the releasing holds were taken before the sale.
  // With WAITLIST, released units go to waitlisted customers as holds: still taken.
  const taken = UNITS - left - (WAITLIST ? data.releases.length * QUANTITY : 0);
  console.log(`flash sale: ${UNITS} units, ${left} available, ${taken} held; expected ${EXPECTED_HELD}`);
  if (left < 0 || taken > UNITS) {
    fail(`OVERSOLD: ${taken} units held of ${UNITS}`);
  }
  if (taken !== EXPECTED_HELD) {
    fail(`the service holds ${taken} units but ${EXPECTED_HELD} were expected`);
  }
}
