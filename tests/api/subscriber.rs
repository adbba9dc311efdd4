//! A GraphQL-over-WebSocket client for the tests: a real socket to the real server,
//! speaking graphql-transport-ws (or the legacy graphql-ws) frame by frame.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

pub const STOCK_CHANGED: &str =
    "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }";
pub const ORDER_CHANGED: &str =
    "subscription($id: ID) { orderChanged(orderId: $id) { id status heldUntil } }";

pub struct Subscriber {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: &'static str,
}

/// What the server said about one subscription.
#[derive(Debug)]
pub enum Event {
    Next(Value),
    Error(Value),
    Complete,
}

/// The HTTP status and body of a refused upgrade.
pub async fn refused_upgrade(address: &str) -> (StatusCode, Value) {
    match open(address, TRANSPORT_WS).await {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            (
                response.status(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            )
        }
        Ok(_) => panic!("the upgrade was accepted"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

async fn open(
    address: &str,
    protocol: &'static str,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, WsError> {
    let url = format!("{}/graphql", address.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocol));
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    Ok(socket)
}

impl Subscriber {
    /// Opens a socket without saying anything yet.
    pub async fn open(address: &str, protocol: &'static str) -> Self {
        let socket = open(address, protocol).await.expect("WebSocket upgrade");
        Self { socket, protocol }
    }

    /// Opens a socket and completes `connection_init`, with a token when given.
    pub async fn connect(address: &str, token: Option<&str>) -> Self {
        Self::connect_with(address, TRANSPORT_WS, token).await
    }

    pub async fn connect_with(address: &str, protocol: &'static str, token: Option<&str>) -> Self {
        let mut subscriber = Self::open(address, protocol).await;
        let payload = match token {
            Some(token) => json!({ "authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        subscriber.init(payload).await;
        let ack = subscriber.message(Duration::from_secs(5)).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        subscriber
    }

    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
    }

    pub async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, text: String) {
        let _ = self.socket.send(Message::Text(text.into())).await;
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.protocol == LEGACY_WS {
            "start"
        } else {
            "subscribe"
        };
        self.send(json!({
            "type": kind, "id": id,
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// The next protocol message, answering the server's keepalive pings on the way.
    pub async fn message(&mut self, limit: Duration) -> Value {
        self.try_message(limit)
            .await
            .unwrap_or_else(|| panic!("no message within {limit:?}"))
    }

    pub async fn try_message(&mut self, limit: Duration) -> Option<Value> {
        let text = self.try_text(limit).await?;
        Some(serde_json::from_str(&text).expect("JSON message"))
    }

    /// The next protocol message as the server wrote it, byte for byte.
    pub async fn try_text(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let frame = tokio::time::timeout(left, self.socket.next())
                .await
                .ok()??;
            let text = match frame.expect("socket read") {
                Message::Text(text) => text,
                Message::Close(frame) => panic!("socket closed: {frame:?}"),
                _ => continue,
            };
            let message: Value = serde_json::from_str(&text).expect("JSON message");
            match message["type"].as_str() {
                Some("ping") => self.send(json!({ "type": "pong" })).await,
                Some("ka") => {}
                _ => return Some(text.to_string()),
            }
        }
    }

    /// The next event of subscription `id`; other subscriptions' messages are skipped.
    pub async fn event(&mut self, id: &str, limit: Duration) -> Option<Event> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let message = self.try_message(left).await?;
            if message["id"] != id {
                continue;
            }
            return Some(match message["type"].as_str().unwrap_or_default() {
                "next" | "data" => Event::Next(message["payload"].clone()),
                "error" => Event::Error(message["payload"].clone()),
                "complete" => Event::Complete,
                other => panic!("unexpected message type {other}: {message}"),
            });
        }
    }

    /// The payload of the next `next` of subscription `id`.
    pub async fn next_payload(&mut self, id: &str, limit: Duration) -> Value {
        match self.event(id, limit).await {
            Some(Event::Next(payload)) => payload,
            other => panic!("expected a result for {id}, got {other:?}"),
        }
    }

    /// Waits for the server to close the socket and returns the close code and reason.
    pub async fn closed(&mut self, limit: Duration) -> (u16, String) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("socket still open after {limit:?}"));
            match tokio::time::timeout(left, self.socket.next()).await {
                Err(_) => panic!("socket still open after {limit:?}"),
                Ok(None) => panic!("socket ended without a close frame"),
                Ok(Some(Ok(Message::Close(Some(frame))))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(Some(Ok(Message::Close(None)))) => {
                    return (u16::from(CloseCode::Status), String::new());
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(error))) => panic!("socket failed before closing: {error}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
