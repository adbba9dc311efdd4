// Shoppers browsing: the product listing of a store and single product reads (each
// with its live availability from Redis), at a steady arrival rate, anonymously.
//
//   k6 run k6/browse.js
//   k6 run -e RATE=500 -e DURATION=1m k6/browse.js
//
// Env: BASE_URL (http://127.0.0.1:8080), RATE (requests started per second, 200),
// DURATION (30s), PAGE (products per listing, 20). Products are whatever the service
// has (`flashstock seed` creates some); setup fails when there are none.

import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';
import { gql } from './lib.js';

const RATE = parseInt(__ENV.RATE || '200', 10);
const PAGE = parseInt(__ENV.PAGE || '20', 10);

const wrong = new Counter('browse_wrong');

export const options = {
  scenarios: {
    browse: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(10, Math.ceil(RATE / 4)),
      maxVUs: Math.max(50, RATE),
    },
  },
  thresholds: {
    checks: ['rate==1'],
    browse_wrong: ['count==0'],
    dropped_iterations: ['count==0'],
    'http_req_duration{name:products}': ['p(99)<500'],
    'http_req_duration{name:product}': ['p(99)<250'],
  },
};

const STORES = 'query stores { stores { id } }';
const PRODUCTS = `query products($storeId: ID, $first: Int!) {
  products(storeId: $storeId, first: $first) {
    totalCount nodes { id name priceCents available maxPerCustomer } } }`;
const PRODUCT = 'query product($id: ID!) { product(id: $id) { id name available } }';

function data(result, field) {
  return result.body && !result.body.errors && result.body.data ? result.body.data[field] : undefined;
}

export function setup() {
  const stores = data(gql(STORES), 'stores');
  if (!stores || stores.length === 0) {
    fail('no stores: run `flashstock seed` first');
  }
  const products = [];
  for (const store of stores) {
    const page = data(gql(PRODUCTS, { storeId: store.id, first: 100 }), 'products');
    if (!page) {
      fail(`products of store ${store.id} could not be read`);
    }
    page.nodes.forEach((p) => products.push(p.id));
  }
  if (products.length === 0) {
    fail('no products: run `flashstock seed` first');
  }
  return { stores: stores.map((s) => s.id), products };
}

export default function (seen) {
  if (Math.random() < 0.3) {
    const storeId = seen.stores[Math.floor(Math.random() * seen.stores.length)];
    const page = data(gql(PRODUCTS, { storeId, first: PAGE }), 'products');
    const ok = check(page, {
      'products listed with availability': (p) =>
        p !== undefined && p.nodes.length > 0 && p.nodes.length <= PAGE &&
        p.nodes.every((n) => Number.isInteger(n.available) && n.available >= 0),
    });
    if (!ok) wrong.add(1);
  } else {
    const id = seen.products[Math.floor(Math.random() * seen.products.length)];
    const product = data(gql(PRODUCT, { id }), 'product');
    const ok = check(product, {
      'product read with availability': (p) =>
        p !== undefined && p !== null && p.id === id && p.available >= 0,
    });
    if (!ok) wrong.add(1);
  }
}
