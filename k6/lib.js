// Shared by the k6 scripts: the GraphQL post, accounts, and the admin's product.
//
// Every helper reads the GraphQL body. A 200 with `errors` is a failure here, never
// a success: the service answers business refusals inside the payload and GraphQL
// errors at the top level, both with HTTP 200.

import http from 'k6/http';
import crypto from 'k6/crypto';
import { fail } from 'k6';

export const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
export const GRAPHQL_URL = `${BASE_URL.replace(/\/$/, '')}/graphql`;
export const ADMIN_EMAIL = __ENV.ADMIN_EMAIL || 'admin@example.com';
export const ADMIN_PASSWORD = __ENV.ADMIN_PASSWORD || 'password123';
export const STORE_ID = __ENV.STORE_ID || '1';
export const PASSWORD = __ENV.BUYER_PASSWORD || 'flash-sale-pass';
// Set to the service's PAYMENT_WEBHOOK_SECRET when it runs with PAYMENT_CONFIRMATION=webhook:
// the scripts then pay like the payment provider would (see payOrder), a development aid.
export const PAYMENT_WEBHOOK_SECRET = __ENV.PAYMENT_WEBHOOK_SECRET || '';
export const WEBHOOK_URL = `${BASE_URL.replace(/\/$/, '')}/webhooks/payment`;

// A tag for this run's emails and product names, so runs never collide.
export function runTag() {
  return __ENV.RUN_TAG || `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

function request(query, variables, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) {
    headers.Authorization = `Bearer ${token}`;
  }
  return {
    method: 'POST',
    url: GRAPHQL_URL,
    body: JSON.stringify({ query, variables: variables || {} }),
    params: { headers, tags: { name: query.trim().split(/[\s({]+/)[1] || 'graphql' } },
  };
}

// The parsed body, or null when there is none (connection error, HTML error page).
export function body(response) {
  try {
    return response.json();
  } catch (_) {
    return null;
  }
}

// POSTs one operation; returns { response, body }.
export function gql(query, variables, token) {
  const r = request(query, variables, token);
  const response = http.post(r.url, r.body, r.params);
  return { response, body: body(response) };
}

// POSTs many operations at once (one connection each); returns [{ response, body }].
export function gqlBatch(operations) {
  const responses = http.batch(
    operations.map(({ query, variables, token }) => {
      const r = request(query, variables, token);
      return [r.method, r.url, r.body, r.params];
    }),
  );
  return responses.map((response) => ({ response, body: body(response) }));
}

// The payload of field `name`, or fail() with what the server said instead.
export function payloadOrFail(result, name) {
  const payload = result.body && result.body.data && result.body.data[name];
  if (!payload || (result.body.errors && result.body.errors.length)) {
    fail(`${name}: HTTP ${result.response.status}: ${result.response.body}`);
  }
  return payload;
}

const AUTH_FIELDS = 'token errors { code message }';
export const REGISTER = `mutation register($email: String!, $password: String!) {
  register(email: $email, password: $password) { ${AUTH_FIELDS} } }`;
export const LOGIN = `mutation login($email: String!, $password: String!) {
  login(email: $email, password: $password) { ${AUTH_FIELDS} } }`;

export function login(email, password) {
  const payload = payloadOrFail(gql(LOGIN, { email, password }), 'login');
  if (!payload.token) {
    fail(`login ${email}: ${JSON.stringify(payload.errors)}`);
  }
  return payload.token;
}

export function adminToken() {
  return login(ADMIN_EMAIL, ADMIN_PASSWORD);
}

// Registers `count` customers `<prefix>-<i>@example.com`, `parallel` at a time (each
// costs the server one password hash). An email already taken is logged in instead, so
// a fixed RUN_TAG reuses the accounts of an earlier run. Returns their tokens.
export function customers(prefix, count, parallel) {
  const tokens = [];
  const step = Math.max(1, parallel || 16);
  for (let start = 0; start < count; start += step) {
    const emails = [];
    for (let i = start; i < Math.min(count, start + step); i++) {
      emails.push(`${prefix}-${i}@example.com`);
    }
    const results = gqlBatch(
      emails.map((email) => ({ query: REGISTER, variables: { email, password: PASSWORD } })),
    );
    results.forEach((result, i) => {
      const payload = payloadOrFail(result, 'register');
      if (payload.token) {
        tokens.push(payload.token);
      } else if (payload.errors.length && payload.errors[0].code === 'EMAIL_TAKEN') {
        tokens.push(login(emails[i], PASSWORD));
      } else {
        fail(`register ${emails[i]}: ${JSON.stringify(payload.errors)}`);
      }
    });
  }
  return tokens;
}

export const CREATE_PRODUCT = `mutation createProduct($input: CreateProductInput!) {
  createProduct(input: $input) { product { id available } errors { code message } } }`;

// Creates a product as the admin; returns its id.
export function createProduct(admin, input) {
  const payload = payloadOrFail(
    gql(CREATE_PRODUCT, { input: { storeId: STORE_ID, priceCents: 1000, ...input } }, admin),
    'createProduct',
  );
  if (!payload.product) {
    fail(`createProduct: ${JSON.stringify(payload.errors)}`);
  }
  return payload.product.id;
}

export const AVAILABLE = 'query available($id: ID!) { product(id: $id) { id available } }';

export function available(productId) {
  const product = payloadOrFail(gql(AVAILABLE, { id: productId }), 'product');
  return product.available;
}

export const LOCK_ORDER = `mutation lockOrder($input: LockOrderInput!) {
  lockOrder(input: $input) {
    order { id status heldUntil totalCents }
    errors { code productId available }
  } }`;

// One lockOrder of `quantity` units; returns { response, body, payload } where payload
// is the lockOrder payload or null when the request failed as a whole.
export function lockOrder(token, productId, quantity, idempotencyKey) {
  const input = { items: [{ productId, quantity }] };
  if (idempotencyKey) {
    input.idempotencyKey = idempotencyKey;
  }
  const result = gql(LOCK_ORDER, { input }, token);
  const payload =
    result.body && !result.body.errors && result.body.data ? result.body.data.lockOrder : null;
  return { ...result, payload };
}

// First error code of a payload, or undefined.
export function errorCode(payload) {
  return payload && payload.errors.length ? payload.errors[0].code : undefined;
}

export const JOIN_WAITLIST = `mutation joinWaitlist($id: ID!, $quantity: Int!) {
  joinWaitlist(productId: $id, quantity: $quantity) {
    entry { position status } errors { code message } } }`;

// Joins the product's waitlist; returns the joinWaitlist payload or null.
export function joinWaitlist(token, productId, quantity) {
  const result = gql(JOIN_WAITLIST, { id: productId, quantity }, token);
  return result.body && result.body.data ? result.body.data.joinWaitlist : null;
}

export const CANCEL_ORDER = `mutation cancelOrder($id: ID!) {
  cancelOrder(orderId: $id) { order { status } errors { code } } }`;

export function cancelOrder(token, orderId) {
  const result = gql(CANCEL_ORDER, { id: orderId }, token);
  return result.body && result.body.data ? result.body.data.cancelOrder : null;
}

// Pays for an order as the payment provider would (docs/PAYMENTS.md): a payment.succeeded
// notification signed with PAYMENT_WEBHOOK_SECRET, HMAC-SHA256 over "<t>.<body>". Returns
// { response, body }; a 200 body is { orderId, status }.
export function payOrder(orderId, amountCents, eventId) {
  if (!PAYMENT_WEBHOOK_SECRET) {
    fail('payOrder needs PAYMENT_WEBHOOK_SECRET');
  }
  const payload = JSON.stringify({
    id: eventId,
    type: 'payment.succeeded',
    orderId,
    paymentReference: `pay-${eventId}`,
    amountCents,
  });
  const t = Math.floor(Date.now() / 1000);
  const signature = crypto.hmac('sha256', PAYMENT_WEBHOOK_SECRET, `${t}.${payload}`, 'hex');
  const response = http.post(WEBHOOK_URL, payload, {
    headers: { 'Content-Type': 'application/json', 'Flashstock-Signature': `t=${t},v1=${signature}` },
    tags: { name: 'paymentWebhook' },
  });
  return { response, body: body(response) };
}

export const MY_ORDERS = `query myOrders {
  myOrders(first: 50) { edges { node { status fromWaitlist lines { quantity product { id } } } } } }`;

// Units of `productId` in the HELD orders of `tokens`' customers, summed apart for
// orders the waitlist made and for the rest: { fromWaitlist, other }. Asks `parallel`
// customers at a time; myOrders reads MySQL, so it trails the service by the flush.
export function unitsHeldBy(tokens, productId, parallel) {
  const units = { fromWaitlist: 0, other: 0 };
  const step = Math.max(1, parallel || 16);
  for (let start = 0; start < tokens.length; start += step) {
    const results = gqlBatch(
      tokens.slice(start, start + step).map((token) => ({ query: MY_ORDERS, token })),
    );
    results.forEach((result) => {
      for (const { node } of payloadOrFail(result, 'myOrders').edges) {
        if (node.status !== 'HELD') {
          continue;
        }
        for (const line of node.lines) {
          if (line.product.id === productId) {
            units[node.fromWaitlist ? 'fromWaitlist' : 'other'] += line.quantity;
          }
        }
      }
    });
  }
  return units;
}
