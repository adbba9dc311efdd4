//! The subscriber side of `scripts/live-bench`: opens `--subscribers` WebSockets that
//! follow a sale product and a probe product (stockChanged, graphql-transport-ws), then
//! holds one unit of the probe every `--pace-ms`, and reports how long each hold took to
//! reach the subscribers: until each saw that hold's value or a later one (a coalesced
//! update carries every hold before it). A load generator written to cost little per message, so that on
//! a machine it shares with the service, the service is what gets measured.
//!
//!   cargo run --release --example live_subscribers -- --url http://127.0.0.1:8080 \
//!       --subscribers 5000 --sale 11 --probe 12 --probes 50 --token <customer token>
//!
//! Prints `ready` once every socket has both products' current values (the probe holds
//! start then), and at the end one line:
//!   LIVE_RESULT subscribers=N p50_ms=.. p99_ms=.. seen=.. stale=.. failed=.. messages=..
//! `messages` counts the updates all sockets received while the probe holds ran; `seen` counts (subscriber, probe hold) pairs observed; `stale` counts subscribers whose
//! last values differ from the availability the service reports once the run has settled;
//! `failed` counts sockets that did not open or subscribe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[derive(Parser)]
struct Args {
    /// The service's base URL.
    #[arg(long)]
    url: String,
    #[arg(long)]
    subscribers: usize,
    /// The product the sale runs on.
    #[arg(long)]
    sale: u64,
    /// The product this client holds one unit of every `pace_ms`; it needs `probes` units.
    #[arg(long)]
    probe: u64,
    #[arg(long, default_value_t = 50)]
    probes: i64,
    #[arg(long, default_value_t = 200)]
    pace_ms: u64,
    /// A customer's token for the probe holds.
    #[arg(long)]
    token: String,
    /// How long to wait after the last probe hold before reading the true values: enough
    /// for every socket's last update, an interval or two of the service's.
    #[arg(long, default_value_t = 2000)]
    settle_ms: u64,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_parallel: usize,
}

/// One socket's view: the latest value of each product, and when it saw each probe value.
struct Seen {
    sale: Option<i64>,
    probe: Option<i64>,
    /// `probe_at[k]`: when the probe value `probes - k` arrived.
    probe_at: Vec<Option<Instant>>,
}

/// Updates received by every socket so far.
static MESSAGES: AtomicU64 = AtomicU64::new(0);

const STOCK_CHANGED: &str =
    "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }";

/// `"productId":"<id>","available":<n>` without a JSON parse: the service writes the
/// standard selection in exactly this shape.
fn update_of(text: &str) -> Option<(u64, i64)> {
    let rest = &text[text.find(r#""productId":""#)? + 13..];
    let end = rest.find('"')?;
    let product = rest[..end].parse().ok()?;
    let rest = &rest[rest.find(r#""available":"#)? + 12..];
    let end = rest.find(|c: char| c != '-' && !c.is_ascii_digit())?;
    Some((product, rest[..end].parse().ok()?))
}

async fn subscriber(
    args: Arc<Args>,
    ready: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
    opening: Arc<Semaphore>,
) -> anyhow::Result<Seen> {
    let permit = opening.acquire().await?;
    let url = format!("{}/graphql", args.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    drop(permit);
    socket
        .send(Message::Text(
            json!({ "type": "connection_init", "payload": {} })
                .to_string()
                .into(),
        ))
        .await?;
    let mut seen = Seen {
        sale: None,
        probe: None,
        probe_at: vec![None; args.probes as usize + 1],
    };
    let mut counted = false;
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = socket.next() => match frame {
                Some(frame) => frame?,
                None => anyhow::bail!("socket closed"),
            },
        };
        let Message::Text(text) = frame else {
            continue;
        };
        if let Some((product, available)) = update_of(&text) {
            MESSAGES.fetch_add(1, Ordering::Relaxed);
            if product == args.sale {
                seen.sale = Some(available);
            } else if product == args.probe {
                seen.probe = Some(available);
                let k = (args.probes - available).clamp(0, args.probes) as usize;
                seen.probe_at[k].get_or_insert_with(Instant::now);
            }
            if !counted && seen.sale.is_some() && seen.probe.is_some() {
                counted = true;
                ready.fetch_add(1, Ordering::Relaxed);
            }
        } else if text.contains(r#""type":"connection_ack""#) {
            let subscribe = json!({
                "type": "subscribe", "id": "s",
                "payload": { "query": STOCK_CHANGED,
                             "variables": { "ids": [args.sale.to_string(), args.probe.to_string()] } },
            });
            socket
                .send(Message::Text(subscribe.to_string().into()))
                .await?;
        } else if text.contains(r#""type":"ping""#) {
            socket
                .send(Message::Text(r#"{"type":"pong"}"#.into()))
                .await?;
        } else if !text.contains(r#""type":"pong""#) {
            anyhow::bail!("unexpected message: {text}");
        }
    }
    let _ = socket.close(None).await;
    Ok(seen)
}

async fn graphql(
    http: &reqwest::Client,
    args: &Args,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    Ok(http
        .post(format!("{}/graphql", args.url))
        .bearer_auth(&args.token)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await?
        .json()
        .await?)
}

async fn available(http: &reqwest::Client, args: &Args, product: u64) -> anyhow::Result<i64> {
    let body = graphql(
        http,
        args,
        "query($id: ID!) { product(id: $id) { available } }",
        json!({ "id": product.to_string() }),
    )
    .await?;
    body["data"]["product"]["available"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no availability: {body}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let opening = Arc::new(Semaphore::new(args.connect_parallel));
    let mut sockets = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let (args, ready, stop, opening) = (
            Arc::clone(&args),
            Arc::clone(&ready),
            stop.clone(),
            Arc::clone(&opening),
        );
        sockets.push(tokio::spawn(subscriber(args, ready, stop, opening)));
    }
    let started = Instant::now();
    while ready.load(Ordering::Relaxed) < args.subscribers {
        if sockets.iter().any(|s| s.is_finished()) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {} sockets subscribed",
            ready.load(Ordering::Relaxed),
            args.subscribers
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("ready");

    let http = reqwest::Client::new();
    let lock = "mutation($p: ID!) { lockOrder(input: { items: [{ productId: $p, quantity: 1 }] }) { order { id } errors { code } } }";
    let mut sent_at = vec![None; args.probes as usize + 1];
    let start = tokio::time::Instant::now();
    let messages_before = MESSAGES.load(Ordering::Relaxed);
    for (k, sent) in sent_at.iter_mut().enumerate().skip(1) {
        tokio::time::sleep_until(start + Duration::from_millis(args.pace_ms * k as u64)).await;
        *sent = Some(Instant::now());
        let body = graphql(&http, &args, lock, json!({ "p": args.probe.to_string() })).await?;
        anyhow::ensure!(
            body["data"]["lockOrder"]["order"]["id"].is_string(),
            "probe hold {k}: {body}"
        );
    }
    let messages = MESSAGES.load(Ordering::Relaxed) - messages_before;
    // Settle: every socket gets the last values within an interval or two.
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let truth = (
        available(&http, &args, args.sale).await?,
        available(&http, &args, args.probe).await?,
    );
    stop.cancel();

    let (mut latencies, mut stale, mut failed) = (Vec::new(), 0, 0);
    for socket in sockets {
        match socket.await? {
            Ok(seen) => {
                if (seen.sale, seen.probe) != (Some(truth.0), Some(truth.1)) {
                    stale += 1;
                }
                // Hold k reached this socket with the first value at or past it: walk
                // from the last hold back, keeping the earliest arrival seen so far.
                let mut reached: Option<Instant> = None;
                for k in (1..seen.probe_at.len()).rev() {
                    reached = match (reached, seen.probe_at[k]) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if let (Some(at), Some(sent)) = (reached, sent_at[k]) {
                        latencies.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
                    }
                }
            }
            Err(error) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("socket failed: {error:#}");
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "LIVE_RESULT subscribers={} p50_ms={:.1} p99_ms={:.1} seen={} stale={} failed={} messages={}",
        args.subscribers,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len(),
        stale,
        failed,
        messages
    );
    Ok(())
}
