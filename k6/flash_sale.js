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
// flash_released_units (units given back), flash_waiter_units (units in HELD orders the
// waitlist made, counted from the buyers' myOrders at the end), flash_poller_units
// (threshold: 0, out of flash_poll_attempts lockOrder calls; a bot keeps what it gets)
// and flash_waitlisted (buyers who joined) say how many went where. The teardown fails the
// run unless the released units are exactly those the waitlist handed over, the bots hold
// and those still on sale.
//   k6 run -e WAITLIST=1 -e BUYERS=500 -e UNITS=70 -e RELEASES=20 k6/flash_sale.js

import exec from 'k6/execution';
import { check, fail, sleep } from 'k6';
import { Counter } from 'k6/metrics';
import {
  adminToken, available, cancelOrder, createProduct, customers, errorCode, joinWaitlist,
  lockOrder, runTag, unitsHeldBy,
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
const waiterUnits = new Counter('flash_waiter_units');
const pollAttempts = new Counter('flash_poll_attempts');

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
  // When enough buyers were turned away to wait for all of them.
  if (BUYERS * QUANTITY - EXPECTED_HELD >= RELEASES * QUANTITY) {
    thresholds.flash_waiter_units = [`count==${RELEASES * QUANTITY}`];
  }
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
// the waitlist did not. It keeps what it gets (given back, a unit would be counted again
// by the next poller), so one bot takes at most the per-customer limit, QUANTITY.
export function poll(data) {
  const token = data.pollers[exec.vu.idInTest % data.pollers.length];
  const result = lockOrder(token, data.productId, QUANTITY);
  pollAttempts.add(1);
  if (result.payload && result.payload.order) {
    pollerUnits.add(QUANTITY);
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
  const taken = UNITS - left;
  if (left < 0 || taken > UNITS) {
    fail(`OVERSOLD: ${taken} units held of ${UNITS}`);
  }
  if (!WAITLIST) {
    console.log(`flash sale: ${UNITS} units, ${left} available, ${taken} held; expected ${EXPECTED_HELD}`);
    if (taken !== EXPECTED_HELD) {
      fail(`the service holds ${taken} units but ${EXPECTED_HELD} were expected`);
    }
    return;
  }
  // Every unit once: held by a buyer of the sale, handed to a waitlisted customer, held by
  // a poller, or still on sale. myOrders reads MySQL: give the flusher a moment.
  const released = data.releases.length * QUANTITY;
  const parallel = parseInt(__ENV.REGISTER_PARALLEL || '16', 10);
  let buyers;
  let pollers;
  for (let tries = 0; tries < 20; tries++) {
    buyers = unitsHeldBy(data.tokens, data.productId, parallel);
    pollers = unitsHeldBy(data.pollers, data.productId, parallel);
    if (buyers.other + buyers.fromWaitlist + pollers.other === taken) {
      break;
    }
    sleep(0.5);
  }
  waiterUnits.add(buyers.fromWaitlist);
  console.log(
    `flash sale: ${UNITS} units, ${buyers.other} held in the sale (expected ${EXPECTED_HELD}); ` +
      `waitlist: ${released} units released, ${buyers.fromWaitlist} to waitlisted customers, ` +
      `${pollers.other} to pollers, ${left} left on sale`,
  );
  if (buyers.other !== EXPECTED_HELD) {
    fail(`the sale's buyers hold ${buyers.other} units but ${EXPECTED_HELD} were expected`);
  }
  if (buyers.fromWaitlist + pollers.other + left !== released) {
    fail(`${released} units were released but ${buyers.fromWaitlist + pollers.other + left} are accounted for`);
  }
}
