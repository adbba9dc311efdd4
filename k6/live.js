// Live stock under a flash sale: SUBSCRIBERS WebSockets follow one product's
// availability (stockChanged) while flash_sale.js-style buyers race for its units.
//
//   k6 run k6/live.js                                   # 1000 subscribers, 2000 buyers
//   k6 run -e SUBSCRIBERS=5000 -e BUYERS=2000 -e UNITS=500 k6/live.js
//
// Env: BASE_URL, SUBSCRIBERS (1000), BUYERS (2000), UNITS (500), VUS (buyers at once,
// 200), PACE_MS (200), PROBES (50), SETTLE_SECONDS (5), plus flash_sale.js's account
// settings. The service needs WS_MAX_CONNECTIONS_PER_ADDRESS above SUBSCRIBERS (k6 runs
// every socket from one address), MAX_HOLDS_PER_CUSTOMER=0 (one pacer holds PROBES units)
// and its default HOLD_TTL.
//
// Latency: a pacer holds one unit of a second product every PACE_MS from a start time
// every subscriber knows, so the k-th hold takes that product from PROBES to PROBES-k
// at start + k*PACE_MS. A subscriber seeing PROBES-k at time t records, for every hold
// j <= k it had not seen yet, t - (start + j*PACE_MS): from the moment the hold is sent
// to the moment the subscriber has it or a later value (`live_hold_to_subscriber`,
// p50/p95/p99 in the summary). Each socket watches two products, so the service's update
// budget (LIVE_MAX_UPDATES_PER_SECOND, docs/LIVE.md) holds it to an update every
// 2 * SUBSCRIBERS / budget seconds at most; SETTLE_SECONDS must cover two of those.
// Correctness: after the sale and SETTLE_SECONDS, every subscriber's last value of the
// sale product must equal the availability the service reports (`live_stale_last`).

import exec from 'k6/execution';
import http from 'k6/http';
import ws from 'k6/ws';
import { check, fail, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import {
  BASE_URL, adminToken, available, createProduct, customers, errorCode, lockOrder, runTag,
} from './lib.js';

const SUBSCRIBERS = parseInt(__ENV.SUBSCRIBERS || '1000', 10);
const BUYERS = parseInt(__ENV.BUYERS || '2000', 10);
const UNITS = parseInt(__ENV.UNITS || '500', 10);
const VUS = Math.min(BUYERS, parseInt(__ENV.VUS || '200', 10));
const PACE_MS = parseInt(__ENV.PACE_MS || '200', 10);
const PROBES = parseInt(__ENV.PROBES || '50', 10);
const SETTLE_SECONDS = parseInt(__ENV.SETTLE_SECONDS || '5', 10);
// Subscribers connect first; the sale and the pacer start once they are all in.
const WARMUP_SECONDS = Math.max(10, Math.ceil(SUBSCRIBERS / 500) * 5);
const SALE_SECONDS = Math.ceil((PROBES * PACE_MS) / 1000) + 5;
const WS_URL = `${BASE_URL.replace(/^http/, 'ws').replace(/\/$/, '')}/graphql`;
const STOCK_CHANGED =
  'subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }';

const latency = new Trend('live_hold_to_subscriber', true);
const updates = new Counter('live_updates');
const stale = new Counter('live_stale_last');
const heldUnits = new Counter('flash_held_units');
const unexpected = new Counter('flash_unexpected');

export const options = {
  setupTimeout: __ENV.SETUP_TIMEOUT || '10m',
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      vus: SUBSCRIBERS,
      iterations: 1,
      exec: 'subscriber',
      maxDuration: `${WARMUP_SECONDS + SALE_SECONDS + SETTLE_SECONDS + 60}s`,
    },
    buyers: {
      executor: 'shared-iterations',
      vus: VUS,
      iterations: BUYERS,
      exec: 'buyer',
      startTime: `${WARMUP_SECONDS}s`,
      maxDuration: `${SALE_SECONDS + 60}s`,
    },
    pacer: {
      executor: 'per-vu-iterations',
      vus: 1,
      iterations: 1,
      exec: 'pacer',
      startTime: `${WARMUP_SECONDS}s`,
    },
  },
  thresholds: {
    live_stale_last: ['count==0'],
    flash_held_units: [`count<=${UNITS}`],
    flash_unexpected: ['count==0'],
    checks: ['rate==1'],
  },
};

export function setup() {
  const tag = runTag();
  const admin = adminToken();
  const productId = createProduct(admin, { name: `Live sale ${tag}`, stock: UNITS, maxPerCustomer: 1 });
  const probeId = createProduct(admin, { name: `Live probe ${tag}`, stock: PROBES });
  const tokens = customers(`live-${tag}`, BUYERS + 1, parseInt(__ENV.REGISTER_PARALLEL || '16', 10));
  // The pacer's k-th hold is sent at start + k * PACE_MS.
  const start = Date.now() + WARMUP_SECONDS * 1000 + 1000;
  console.log(`live: sale product ${productId} (${UNITS} units), probe ${probeId}, ${SUBSCRIBERS} subscribers`);
  // For CPU sampling: the sale window, in Unix milliseconds.
  console.log(`live: sale window ${start} ${start + SALE_SECONDS * 1000}`);
  return { productId, probeId, tokens, start };
}

export function subscriber(data) {
  const end = data.start + SALE_SECONDS * 1000 + SETTLE_SECONDS * 1000;
  let last = null;
  let probesSeen = 0;
  const response = ws.connect(WS_URL, { headers: { 'Sec-WebSocket-Protocol': 'graphql-transport-ws' } }, (socket) => {
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: {} })));
    socket.on('message', (text) => {
      const message = JSON.parse(text);
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({
          type: 'subscribe', id: 's',
          payload: { query: STOCK_CHANGED, variables: { ids: [data.productId, data.probeId] } },
        }));
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      } else if (message.type === 'next') {
        const update = message.payload.data && message.payload.data.stockChanged;
        if (!update) {
          fail(`subscription error: ${text}`);
        }
        updates.add(1);
        if (update.productId === data.productId) {
          last = update.available;
        } else {
          // A coalesced update carries every hold up to k: each of them reached this
          // subscriber now, including those whose own value it never saw.
          const k = Math.min(PROBES - update.available, PROBES);
          const now = Date.now();
          for (let j = probesSeen + 1; j <= k; j += 1) {
            latency.add(now - (data.start + j * PACE_MS));
          }
          probesSeen = Math.max(probesSeen, k);
        }
      }
    });
    socket.setTimeout(() => socket.close(), Math.max(1000, end - Date.now()));
  });
  check(response, { 'WebSocket upgraded': (r) => r && r.status === 101 });
  const truth = available(data.productId);
  if (!check(last, { 'last value seen is the final availability': (v) => v === truth })) {
    stale.add(1);
    console.error(`subscriber ${exec.vu.idInTest}: last ${last}, final ${truth}`);
  }
}

export function buyer(data) {
  const index = exec.scenario.iterationInTest;
  const result = lockOrder(data.tokens[index], data.productId, 1);
  const code = errorCode(result.payload);
  const held = result.payload && result.payload.order && result.payload.order.status === 'HELD';
  if (held) {
    heldUnits.add(1);
  } else if (code !== 'INSUFFICIENT_STOCK') {
    unexpected.add(1);
    console.error(`buyer ${index}: HTTP ${result.response.status}: ${result.response.body}`);
  }
}

export function pacer(data) {
  const token = data.tokens[BUYERS];
  for (let k = 1; k <= PROBES; k += 1) {
    const wait = data.start + k * PACE_MS - Date.now();
    if (wait > 0) {
      sleep(wait / 1000);
    }
    const result = lockOrder(token, data.probeId, 1);
    if (!result.payload || !result.payload.order) {
      unexpected.add(1);
      console.error(`pacer hold ${k}: ${result.response.body}`);
    }
  }
}

export function teardown(data) {
  const left = available(data.productId);
  console.log(`live: ${UNITS} units, ${left} left; ${http.get(`${BASE_URL}/healthz`).status}`);
  if (left < 0) {
    fail(`OVERSOLD: ${left}`);
  }
}
