//! GraphQL over WebSocket at GET /graphql: `graphql-transport-ws` and the legacy
//! `graphql-ws`, run by async-graphql's `GraphQLWebSocket`, inside a thin layer of the
//! service's own for what async-graphql leaves out:
//! - connection caps (WS_MAX_CONNECTIONS, WS_MAX_CONNECTIONS_PER_ADDRESS), refused before
//!   the upgrade with the JSON error every refusal has;
//! - close 4408 without `connection_init` within WS_INIT_TIMEOUT, and 4403 for a token
//!   that is not valid;
//! - at most WS_MAX_SUBSCRIPTIONS subscriptions per socket, messages up to MAX_BODY_BYTES;
//! - keepalive pings, and close 1001 when the server shuts down;
//! - stockChanged in its standard form served from the live hub's shared responses
//!   (`ws_stock`), not executed once per socket.
//!
//! Who the client is comes from the `connection_init` payload, `{"authorization":
//! "Bearer <token>"}` (browsers cannot set headers on a WebSocket), checked exactly like
//! the HTTP header.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::WebSocketProtocols;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, SinkExt, StreamExt, future};
use serde::Deserialize;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_util::sync::{CancellationToken, PollSender};

use super::HttpState;
use super::client_addr::client_addr;
use super::ws_stock;
use crate::auth::{Authentication, Caller, ClientAddr, VerifiedToken, authenticate_value};
use crate::config::Config;
use crate::error::{Refusal, RequestId};
use crate::graphql::SchemaLimits;
use crate::live::StockStream;

/// Close codes of the graphql-transport-ws protocol and RFC 6455 used here.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
}

const FORBIDDEN: &str = "Forbidden";

/// Socket buffers: a subscriber mostly receives small messages, and thousands of sockets
/// with tungstenite's 128 KiB defaults would cost memory for nothing.
const SOCKET_BUFFER: usize = 4 * 1024;
/// Messages from the protocol waiting for a slow socket before the protocol stops
/// reading subscriptions (whose stock streams then skip to the latest value).
const OUTGOING_BACKLOG: usize = 32;
/// Missed keepalive rounds after which a silent socket is closed.
const SILENT_ROUNDS: u32 = 3;

/// Open sockets: the caps, and a way to wait for all of them to close on shutdown.
pub struct Sockets {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<OpenSockets>,
    closed: Notify,
    stop: CancellationToken,
}

#[derive(Default)]
struct OpenSockets {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One socket's place under the caps, given back when dropped.
pub struct SocketSlot {
    sockets: Arc<Sockets>,
    address: IpAddr,
}

impl Sockets {
    /// `stop` closes every socket with 1001.
    pub fn new(config: &Config, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.ws_max_connections,
            max_per_address: config.ws_max_connections_per_address,
            open: Mutex::default(),
            closed: Notify::new(),
            stop,
        })
    }

    fn reserve(self: &Arc<Self>, address: IpAddr) -> Result<SocketSlot, Refusal> {
        let mut open = self.open.lock().expect("socket count lock poisoned");
        if open.total >= self.max_total {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "TOO_MANY_CONNECTIONS",
                format!(
                    "this server has {} WebSockets open, its limit",
                    self.max_total
                ),
            ));
        }
        let mine = open.by_address.entry(address).or_default();
        if *mine >= self.max_per_address {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_CONNECTIONS",
                format!(
                    "at most {} WebSockets per client address",
                    self.max_per_address
                ),
            ));
        }
        *mine += 1;
        open.total += 1;
        Ok(SocketSlot {
            sockets: Arc::clone(self),
            address,
        })
    }

    pub fn open_count(&self) -> usize {
        self.open.lock().expect("socket count lock poisoned").total
    }

    /// Resolves once every socket has closed (they close on `stop`).
    pub async fn all_closed(&self) {
        loop {
            let closed = self.closed.notified();
            if self.open_count() == 0 {
                return;
            }
            closed.await;
        }
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self
            .sockets
            .open
            .lock()
            .expect("socket count lock poisoned");
        open.total -= 1;
        if let Some(mine) = open.by_address.get_mut(&self.address) {
            *mine -= 1;
            if *mine == 0 {
                open.by_address.remove(&self.address);
            }
        }
        drop(open);
        self.sockets.closed.notify_waiters();
    }
}

fn wants_websocket(request: &Request) -> bool {
    request.method() == Method::GET
        && request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The first protocol the client offers that we speak (as `GraphQLProtocol` chooses).
fn offered_protocol(request: &Request) -> Option<WebSocketProtocols> {
    request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)?
        .to_str()
        .ok()?
        .split(',')
        .find_map(|p| WebSocketProtocols::from_str(p.trim()).ok())
}

/// Middleware on GET /graphql: a WebSocket upgrade is served here, anything else goes on
/// to the route's own handler.
pub async fn upgrade(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if !wants_websocket(&request) {
        return next.run(request).await;
    }
    let Some(kind) = offered_protocol(&request) else {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            crate::error::codes::BAD_REQUEST,
            "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
        )
        .into_response();
    };
    // The address every per-address limit keys on, as for HTTP requests.
    let client = client_addr(
        peer.ip(),
        request.headers(),
        &state.app.config.trusted_proxies,
    );
    let slot = match state.sockets.reserve(client) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let request_id = request
        .headers()
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (mut parts, _body) = request.into_parts();
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(protocol) => protocol,
        Err(status) => return status.into_response(),
    };
    let mut upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    upgrade.set_selected_protocol(HeaderValue::from_static(kind.sec_websocket_protocol()));
    let max_message = state.app.config.max_body_bytes;
    upgrade
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| {
            let connection = Connection {
                state,
                kind,
                protocol,
                client,
                request_id,
                _slot: slot,
            };
            connection.serve(socket)
        })
}

struct Connection {
    state: HttpState,
    kind: WebSocketProtocols,
    protocol: GraphQLProtocol,
    client: IpAddr,
    request_id: String,
    _slot: SocketSlot,
}

/// What the socket's reader learns, for the writer's timers and limits.
struct Seen {
    initialised: bool,
    /// The protocol has acknowledged `connection_init`: subscriptions may run from now on.
    acked: bool,
    last_heard: Instant,
    /// Every running subscription, however it is served (the per-socket limit).
    subscriptions: HashSet<String>,
    /// Those served by `ws_stock` rather than by async-graphql.
    shared: HashSet<String>,
    oversized: bool,
}

/// From the reader to the writer: the shared stockChanged subscriptions to start or end.
enum SharedStock {
    Start(String, StockStream),
    /// The client reused the id for a new subscription: drop this one without a word, as
    /// async-graphql does when a new subscription takes a running one's id.
    Replace(String),
    /// The client completed it: drop it and say `complete`.
    Stop(String),
}

fn complete_message(id: &str) -> String {
    serde_json::json!({ "type": "complete", "id": id }).to_string()
}

/// The few fields of a client message this layer looks at.
#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

#[derive(Deserialize)]
struct InitPayload {
    authorization: Option<serde_json::Value>,
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

impl Connection {
    async fn serve(self, socket: WebSocket) {
        let config = Arc::clone(&self.state.app.config);
        let (mut to_client, from_client) = socket.split();
        let seen = Arc::new(Mutex::new(Seen {
            initialised: false,
            acked: false,
            last_heard: Instant::now(),
            subscriptions: HashSet::new(),
            shared: HashSet::new(),
            oversized: false,
        }));
        let (refusals, mut refused) = mpsc::unbounded_channel::<String>();
        let (shared_control, mut shared_requests) = mpsc::unbounded_channel::<SharedStock>();
        let mut shared: StreamMap<String, BoxStream<'static, Option<String>>> = StreamMap::new();
        let input = self.inspect_input(from_client, Arc::clone(&seen), refusals, shared_control);
        let (output, mut outgoing) = mpsc::channel::<Message>(OUTGOING_BACKLOG);

        let app = Arc::clone(&self.state.app);
        // The token connection_init accepted, checked again while the socket lives.
        let token: Arc<Mutex<Option<VerifiedToken>>> = Arc::default();
        let accepted = Arc::clone(&token);
        let mut data = Data::default();
        data.insert(ClientAddr(self.client));
        data.insert(RequestId(self.request_id.clone()));
        let graphql = GraphQLWebSocket::new_with_pair(
            PollSender::new(output),
            input,
            self.state.schema.clone(),
            self.protocol,
        )
        .with_data(data)
        .on_connection_init(move |payload| async move {
            connection_init(payload, &app, &accepted).await
        })
        .serve();
        tokio::pin!(graphql);

        let stop = self.state.sockets.stop.clone();
        // Made once: a new future per turn of the loop would join and leave the token's
        // waiter list on every message.
        let stopping = stop.cancelled();
        tokio::pin!(stopping);
        let init_deadline = Instant::now() + config.ws_init_timeout;
        let keepalive = config.ws_keepalive_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        let mut protocol_done = false;
        // HTTP checks revocation on every request; a socket's caller is checked as often
        // as a revoked token must stop working (within a second).
        let mut recheck = tokio::time::interval(Duration::from_secs(1));
        // Ticks missed before the token arrived are not made up in a burst.
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let goodbye = loop {
            let initialised = seen.lock().expect("socket state poisoned").initialised;
            // Only a socket with a token has anything to recheck; thousands of anonymous
            // storefront sockets would otherwise each wake every second for nothing.
            let has_token = token.lock().expect("socket token poisoned").is_some();
            let next = tokio::select! {
                // In this order, and no further than the first that is ready: a stock
                // update (most of what a socket does during a sale) polls nothing else.
                // Every branch still registers its wake-up whenever the ones before it
                // are pending.
                biased;
                () = &mut stopping => break Some(close_frame(close::GOING_AWAY, "server shutting down")),
                Some((id, message)) = shared.next(), if !shared.is_empty() => match message {
                    Some(text) => Message::Text(text.into()),
                    // The product's channel closed (the hub is gone): the subscription ends.
                    None => {
                        shared.remove(&id);
                        let mut seen = seen.lock().expect("socket state poisoned");
                        seen.shared.remove(&id);
                        seen.subscriptions.remove(&id);
                        Message::Text(complete_message(&id).into())
                    }
                },
                Some(request) = shared_requests.recv() => match request {
                    SharedStock::Start(id, stream) => {
                        let messages = ws_stock::messages(stream, &id, self.kind).boxed();
                        shared.insert(id, messages);
                        continue;
                    }
                    SharedStock::Replace(id) => {
                        shared.remove(&id);
                        continue;
                    }
                    SharedStock::Stop(id) => {
                        if shared.remove(&id).is_none() {
                            continue;
                        }
                        Message::Text(complete_message(&id).into())
                    }
                },
                message = outgoing.recv() => match message {
                    Some(Message::Text(text)) => {
                        self.note_completed(&text, &seen);
                        if text.starts_with(r#"{"type":"connection_ack""#) {
                            seen.lock().expect("socket state poisoned").acked = true;
                        }
                        Message::Text(text)
                    }
                    // async-graphql closes a refused connection_init with 1002; the
                    // protocol's word for a bad token is 4403.
                    Some(Message::Close(Some(frame))) if frame.code == 1002 && frame.reason == FORBIDDEN => {
                        close_frame(close::FORBIDDEN, FORBIDDEN)
                    }
                    Some(message) => message,
                    // The protocol has ended (the client closed, or a protocol error).
                    None => {
                        let oversized = seen.lock().expect("socket state poisoned").oversized;
                        break oversized.then(|| close_frame(close::TOO_BIG, "message over MAX_BODY_BYTES"));
                    }
                },
                Some(text) = refused.recv() => Message::Text(text.into()),
                () = &mut graphql, if !protocol_done => {
                    protocol_done = true;
                    continue;
                }
                _ = recheck.tick(), if has_token => {
                    let current = token.lock().expect("socket token poisoned").clone();
                    if let Some(current) = current
                        && !self.still_valid(&current).await
                    {
                        break Some(close_frame(close::FORBIDDEN, "token expired or revoked"));
                    }
                    continue;
                }
                _ = ping.tick() => {
                    let silent = seen.lock().expect("socket state poisoned").last_heard.elapsed();
                    if silent > keepalive * SILENT_ROUNDS {
                        break Some(close_frame(close::GOING_AWAY, "no answer to keepalive pings"));
                    }
                    // A WebSocket ping, which every client answers, tells us the peer is
                    // there; the protocol's own keepalive keeps its clients content.
                    if to_client.send(Message::Ping(Default::default())).await.is_err() {
                        break None;
                    }
                    Message::Text(self.keepalive_message().into())
                }
                () = tokio::time::sleep_until(init_deadline), if !initialised => {
                    break Some(close_frame(close::INIT_TIMEOUT, "Connection initialisation timeout"));
                }
            };
            let closing = matches!(next, Message::Close(_));
            let sent = tokio::time::timeout(keepalive, to_client.send(next)).await;
            if closing || !matches!(sent, Ok(Ok(()))) {
                break None;
            }
        };
        if let Some(goodbye) = goodbye {
            let _ = tokio::time::timeout(Duration::from_secs(1), to_client.send(goodbye)).await;
        }
        let _ = to_client.close().await;
    }

    /// Whether the socket's token is still unexpired and not revoked. A check that cannot
    /// be made (Redis and MySQL both down) keeps the socket, as it keeps the sale going.
    async fn still_valid(&self, token: &VerifiedToken) -> bool {
        if token.expires_at <= chrono::Utc::now().timestamp() {
            return false;
        }
        match self.state.app.token_versions.is_current(token).await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot recheck a socket's token"
                );
                true
            }
        }
    }

    fn keepalive_message(&self) -> &'static str {
        match self.kind {
            WebSocketProtocols::GraphQLWS => r#"{"type":"ping"}"#,
            WebSocketProtocols::SubscriptionsTransportWS => r#"{"type":"ka"}"#,
        }
    }

    /// A subscription the server ended, completed or failed (an `error` message ends an
    /// operation too), no longer counts toward the limit.
    fn note_completed(&self, text: &str, seen: &Mutex<Seen>) {
        if !text.starts_with(r#"{"type":"complete""#) && !text.starts_with(r#"{"type":"error""#) {
            return;
        }
        if let Ok(Peek { id: Some(id), .. }) = serde_json::from_str(text) {
            seen.lock()
                .expect("socket state poisoned")
                .subscriptions
                .remove(&id);
        }
    }

    /// The client's frames as the protocol should see them: notes init and liveness,
    /// counts subscriptions and refuses those over the limit, takes the standard
    /// stockChanged subscriptions (and their completion) for `ws_stock`, and ends at a read
    /// error (a message over MAX_BODY_BYTES among them).
    fn inspect_input(
        &self,
        from_client: futures_util::stream::SplitStream<WebSocket>,
        seen: Arc<Mutex<Seen>>,
        refusals: mpsc::UnboundedSender<String>,
        shared_control: mpsc::UnboundedSender<SharedStock>,
    ) -> impl futures_util::Stream<Item = Result<Message, axum::Error>> + Send + 'static {
        let kind = self.kind;
        let limit = self.state.app.config.ws_max_subscriptions;
        let limits = SchemaLimits::from_config(&self.state.app.config);
        let app = Arc::clone(&self.state.app);
        let seen_on_error = Arc::clone(&seen);
        from_client
            .take_while(move |frame| {
                let ok = frame.is_ok();
                if let Err(error) = frame {
                    // axum hides tungstenite's error type; its capacity error reads
                    // "Space limit exceeded: Message too long: ...".
                    if error.to_string().contains("Space limit exceeded") {
                        seen_on_error
                            .lock()
                            .expect("socket state poisoned")
                            .oversized = true;
                    } else {
                        tracing::debug!(%error, "WebSocket read failed");
                    }
                }
                future::ready(ok)
            })
            .filter_map(
                move |frame| -> BoxFuture<'static, Option<Result<Message, axum::Error>>> {
                    let message = match frame {
                        Ok(message @ (Message::Text(_) | Message::Binary(_))) => message,
                        Ok(_) => {
                            seen.lock().expect("socket state poisoned").last_heard = Instant::now();
                            return future::ready(None).boxed();
                        }
                        Err(error) => return future::ready(Some(Err(error))).boxed(),
                    };
                    let bytes: &[u8] = match &message {
                        Message::Text(text) => text.as_bytes(),
                        Message::Binary(bytes) => bytes,
                        _ => &[],
                    };
                    let mut seen_now = seen.lock().expect("socket state poisoned");
                    seen_now.last_heard = Instant::now();
                    // Whatever does not parse goes on: the protocol answers it (close 1002 or 4400).
                    let peek = serde_json::from_slice::<Peek>(bytes).ok();
                    let (kind_of, id) = peek
                        .as_ref()
                        .map_or(("", None), |p| (p.kind.as_str(), p.id.as_deref()));
                    if let Some(id) = id
                        && seen_now.shared.remove(id)
                    {
                        seen_now.subscriptions.remove(id);
                        if matches!(kind_of, "complete" | "stop") {
                            let _ = shared_control.send(SharedStock::Stop(id.to_owned()));
                            return future::ready(None).boxed();
                        }
                        let _ = shared_control.send(SharedStock::Replace(id.to_owned()));
                    }
                    let running = id.is_some_and(|id| seen_now.subscriptions.contains(id));
                    if !admit(peek, kind, limit, &mut seen_now, &refusals) {
                        return future::ready(None).boxed();
                    }
                    let plain = (seen_now.acked && !running)
                        .then(|| ws_stock::plain_stock_subscription(bytes, &limits))
                        .flatten();
                    drop(seen_now);
                    let Some(plain) = plain else {
                        return future::ready(Some(Ok(message))).boxed();
                    };
                    let app = Arc::clone(&app);
                    let seen = Arc::clone(&seen);
                    let shared_control = shared_control.clone();
                    async move {
                        let Some(stream) = ws_stock::watch(&app, &plain.product_ids).await else {
                            return Some(Ok(message));
                        };
                        seen.lock()
                            .expect("socket state poisoned")
                            .shared
                            .insert(plain.id.clone());
                        let _ = shared_control.send(SharedStock::Start(plain.id, stream));
                        None
                    }
                    .boxed()
                },
            )
    }
}

/// Whether a client message goes on to the protocol. A subscription over the limit gets
/// an error for its id instead and the socket stays open.
fn admit(
    peek: Option<Peek>,
    kind: WebSocketProtocols,
    limit: usize,
    seen: &mut Seen,
    refusals: &mpsc::UnboundedSender<String>,
) -> bool {
    let Some(Peek { kind: message, id }) = peek else {
        return true;
    };
    match (message.as_str(), id) {
        ("connection_init", _) => seen.initialised = true,
        ("subscribe" | "start", Some(id)) => {
            if seen.subscriptions.len() >= limit && !seen.subscriptions.contains(&id) {
                let error = serde_json::json!([{
                    "message": format!("at most {limit} subscriptions may run on one WebSocket"),
                    "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" },
                }]);
                let payload = match kind {
                    WebSocketProtocols::GraphQLWS => error,
                    // The legacy protocol's error payload is one error object.
                    WebSocketProtocols::SubscriptionsTransportWS => error[0].clone(),
                };
                let reply = serde_json::json!({ "type": "error", "id": id, "payload": payload });
                let _ = refusals.send(reply.to_string());
                return false;
            }
            seen.subscriptions.insert(id);
        }
        ("complete" | "stop", Some(id)) => {
            seen.subscriptions.remove(&id);
        }
        _ => {}
    }
    true
}

/// The `connection_init` payload's `authorization`, checked exactly like the HTTP header
/// (signature, expiry, revocation); a value that is there but not a valid Bearer token
/// refuses the connection (4403).
async fn connection_init(
    payload: serde_json::Value,
    app: &crate::context::AppContext,
    accepted: &Mutex<Option<VerifiedToken>>,
) -> async_graphql::Result<Data> {
    let authorization = serde_json::from_value::<InitPayload>(payload)
        .ok()
        .and_then(|p| p.authorization);
    let authentication = match authorization {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(value)) => {
            Some(authenticate_value(Some(&value), &app.tokens, &app.token_versions).await)
        }
        Some(_) => Some(Authentication::refused(Caller::Rejected)),
    };
    let mut data = Data::default();
    match authentication {
        None => data.insert(Caller::Anonymous),
        Some(Authentication {
            caller: Caller::Rejected | Caller::Unverifiable,
            ..
        }) => return Err(async_graphql::Error::new(FORBIDDEN)),
        Some(authentication) => {
            data.insert(authentication.caller);
            if let Some(token) = authentication.token {
                *accepted.lock().expect("socket token poisoned") = Some(token.clone());
                data.insert(token);
            }
        }
    }
    Ok(data)
}
