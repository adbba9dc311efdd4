// flashstock storefront: a small reference client of the public GraphQL API.
// Queries and mutations go to POST /graphql; live availability and the hold's state come
// from subscriptions over WebSocket (graphql-transport-ws) at /graphql.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("token"), email: sessionStorage.getItem("email"), products: new Map(), hold: null };

async function gql(query, variables = {}) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = "Bearer " + state.token;
  const response = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors && body.errors.length) throw new Error(body.errors[0].message);
  return body.data;
}

function say(text, ok = false) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

// --- live updates: one socket, graphql-transport-ws -------------------------------
const live = { socket: null, next: 1, subs: new Map(), retry: 500 };

function connectLive() {
  const url = location.origin.replace(/^http/, "ws") + "/graphql";
  const socket = new WebSocket(url, "graphql-transport-ws");
  live.socket = socket;
  socket.onopen = () => {
    const payload = state.token ? { authorization: "Bearer " + state.token } : {};
    socket.send(JSON.stringify({ type: "connection_init", payload }));
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      live.retry = 500;
      $("live").textContent = "live";
      $("live").classList.remove("off");
      for (const [id, sub] of live.subs) socket.send(JSON.stringify({ type: "subscribe", id, payload: sub.request }));
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    } else if (message.type === "next") {
      const sub = live.subs.get(message.id);
      if (sub) sub.onData(message.payload);
    } else if (message.type === "complete") {
      live.subs.delete(message.id);
    }
  };
  socket.onclose = () => {
    $("live").textContent = "offline";
    $("live").classList.add("off");
    if (live.socket !== socket) return;
    // Reconnect with backoff; subscriptions resume, each starting with the current value.
    setTimeout(connectLive, live.retry);
    live.retry = Math.min(live.retry * 2, 10000);
  };
}

function subscribe(query, variables, onData) {
  const id = String(live.next++);
  const request = { query, variables };
  live.subs.set(id, { request, onData });
  if (live.socket && live.socket.readyState === WebSocket.OPEN && !$("live").classList.contains("off")) {
    live.socket.send(JSON.stringify({ type: "subscribe", id, payload: request }));
  }
  return id;
}

function unsubscribe(id) {
  if (!live.subs.delete(id)) return;
  if (live.socket && live.socket.readyState === WebSocket.OPEN) live.socket.send(JSON.stringify({ type: "complete", id }));
}

function reconnectLive() {
  // The token travels in connection_init, so a login or logout opens a new socket.
  const old = live.socket;
  live.socket = null;
  if (old) old.close();
  connectLive();
}

// --- products --------------------------------------------------------------------
const money = (cents) => (cents / 100).toLocaleString(undefined, { style: "currency", currency: "EUR" });

function showAvailable(id, available) {
  const product = state.products.get(id);
  if (!product) return;
  const changed = product.available !== available;
  product.available = available;
  const cell = document.querySelector(`[data-product="${id}"] .available`);
  cell.textContent = available > 0 ? `${available} left` : "sold out";
  cell.classList.toggle("none", available <= 0);
  if (changed) {
    cell.classList.add("changed");
    setTimeout(() => cell.classList.remove("changed"), 400);
  }
  document.querySelector(`[data-product="${id}"] button`).disabled = !state.token || available <= 0;
}

async function loadProducts() {
  const data = await gql(`{ products(first: 50) { edges { node { id name priceCents available maxPerCustomer store { name } } } } }`);
  const list = $("products");
  list.replaceChildren();
  for (const { node } of data.products.edges) {
    state.products.set(node.id, { ...node, available: null });
    const item = document.createElement("li");
    item.className = "product";
    item.dataset.product = node.id;
    item.innerHTML = `<span class="name"></span><span class="store"></span><span class="price"></span>
      <span class="available"></span>
      <div class="buy"><input type="number" min="1" value="1" aria-label="quantity"><button>Hold</button></div>`;
    item.querySelector(".name").textContent = node.name;
    item.querySelector(".store").textContent = node.store.name + (node.maxPerCustomer ? ` · max ${node.maxPerCustomer} each` : "");
    item.querySelector(".price").textContent = money(node.priceCents);
    item.querySelector("button").addEventListener("click", () => hold(node.id, Number(item.querySelector("input").value)));
    list.append(item);
    showAvailable(node.id, node.available);
  }
  const ids = [...state.products.keys()];
  // At most 100 products per subscription.
  for (let i = 0; i < ids.length; i += 100) {
    subscribe(`subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }`, { ids: ids.slice(i, i + 100) },
      (payload) => payload.data && showAvailable(payload.data.stockChanged.productId, payload.data.stockChanged.available));
  }
}

// --- the hold --------------------------------------------------------------------
const ORDER_FIELDS = "id status heldUntil totalCents lines { quantity product { name } }";

async function hold(productId, quantity) {
  say("");
  try {
    const data = await gql(`mutation($input: LockOrderInput!) { lockOrder(input: $input) { order { ${ORDER_FIELDS} } errors { code message } } }`,
      { input: { items: [{ productId, quantity }], idempotencyKey: crypto.randomUUID() } });
    const { order, errors } = data.lockOrder;
    if (!order) return say(errors.map((e) => e.message).join("; "));
    showHold(order);
  } catch (error) { say(error.message); }
}

function showHold(order) {
  if (state.hold && state.hold.sub && state.hold.order.id !== order.id) unsubscribe(state.hold.sub);
  const sub = state.hold && state.hold.order.id === order.id ? state.hold.sub
    : subscribe(`subscription($id: ID) { orderChanged(orderId: $id) { ${ORDER_FIELDS} } }`, { id: order.id },
      (payload) => payload.data && updateHold(payload.data.orderChanged));
  state.hold = { order, sub };
  updateHold(order);
}

function updateHold(order) {
  if (!state.hold || state.hold.order.id !== order.id) return;
  state.hold.order = order;
  $("hold").hidden = false;
  $("hold-summary").textContent = order.lines.map((l) => `${l.quantity} × ${l.product.name}`).join(", ") + " · " + money(order.totalCents);
  $("hold-status").textContent = order.status;
  const held = order.status === "HELD";
  $("pay").disabled = $("cancel").disabled = !held;
  if (!held) {
    $("hold-countdown").textContent = { CONFIRMED: "Paid. Thank you!", CANCELLED: "Cancelled: the units are back on sale.", EXPIRED: "Expired: the units are back on sale." }[order.status];
    say(order.status === "CONFIRMED" ? "Order confirmed." : "", order.status === "CONFIRMED");
  }
  tick();
}

function tick() {
  const current = state.hold && state.hold.order;
  if (!current || current.status !== "HELD") return;
  const left = Math.max(0, Math.round((Date.parse(current.heldUntil) - Date.now()) / 1000));
  $("hold-countdown").textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left to pay`;
}
setInterval(tick, 250);

async function transition(query, variables) {
  try {
    const data = await gql(query, variables);
    const payload = Object.values(data)[0];
    if (payload.order) updateHold(payload.order);
    else say(payload.errors.map((e) => e.message).join("; "));
  } catch (error) { say(error.message); }
}

$("pay").addEventListener("click", () => transition(
  `mutation($input: ConfirmOrderInput!) { confirmOrder(input: $input) { order { ${ORDER_FIELDS} } errors { code message } } }`,
  { input: { orderId: state.hold.order.id, paymentReference: "demo-" + crypto.randomUUID() } }));
$("cancel").addEventListener("click", () => transition(
  `mutation($id: ID!) { cancelOrder(orderId: $id) { order { ${ORDER_FIELDS} } errors { code message } } }`,
  { id: state.hold.order.id }));

// --- log in / out ------------------------------------------------------------------
function showLogin() {
  $("login").hidden = !!state.token;
  $("who").hidden = !state.token;
  $("who-email").textContent = state.email || "";
  for (const [id, product] of state.products) showAvailable(id, product.available);
}

$("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("");
  try {
    const data = await gql(`mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token errors { message } } }`,
      { email: $("email").value, password: $("password").value });
    if (!data.login.token) return say(data.login.errors.map((e) => e.message).join("; "));
    state.token = data.login.token;
    state.email = $("email").value;
    sessionStorage.setItem("token", state.token);
    sessionStorage.setItem("email", state.email);
    showLogin();
    reconnectLive();
  } catch (error) { say(error.message); }
});

$("logout").addEventListener("click", () => {
  state.token = state.email = null;
  sessionStorage.clear();
  if (state.hold) unsubscribe(state.hold.sub);
  state.hold = null;
  $("hold").hidden = true;
  showLogin();
  reconnectLive();
});

connectLive();
showLogin();
loadProducts().catch((error) => say("Cannot load products: " + error.message));
