//! `flashstock pay`: a development tool that plays the payment provider. It signs a
//! `payment.succeeded` notification with PAYMENT_WEBHOOK_SECRET and sends it to the
//! service's webhook, as a provider would once the money arrived, so that demos and load
//! tests work with PAYMENT_CONFIRMATION=webhook. Never a way to pay in production.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use serde_json::json;

use super::PAYMENT_SUCCEEDED;
use super::signature::{self, HEADER};
use crate::config::Config;
use crate::domain::OrderId;
use crate::hold::HoldEngine;

#[derive(Debug, Clone, clap::Args)]
pub struct PayArgs {
    /// The order to pay (`<store>-<uuid>`).
    #[arg(long)]
    pub order: String,
    /// The amount paid, in cents; by default the order's total, read from Redis or MySQL.
    #[arg(long)]
    pub amount_cents: Option<i64>,
    /// The provider's reference of the payment; by default a new one.
    #[arg(long)]
    pub payment_reference: Option<String>,
    /// The event id; by default a new one. Send one again to see a replay's answer.
    #[arg(long)]
    pub event_id: Option<String>,
    /// The webhook's address; by default http://<LISTEN_ADDR>/webhooks/payment.
    #[arg(long)]
    pub url: Option<String>,
}

fn default_url(listen: SocketAddr) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/webhooks/payment",
        SocketAddr::new(host, listen.port())
    )
}

/// The order's total as the service has it: Redis while it holds the hold, else MySQL.
async fn order_total(config: &Config, order: OrderId) -> anyhow::Result<i64> {
    let engine = HoldEngine::connect(config).await?;
    let db = crate::db::connect_existing(&config.database_url).await?;
    let found = crate::orders::find_order(&db, &engine, order).await?;
    db.close().await;
    found
        .map(|hold| hold.total_cents)
        .ok_or_else(|| anyhow::anyhow!("no order {order}; pass --amount-cents to send anyway"))
}

pub async fn run(config: &Config, args: PayArgs) -> anyhow::Result<()> {
    let secret = config
        .payment_webhook_secret()
        .context("PAYMENT_WEBHOOK_SECRET is required to sign the notification")?;
    let amount_cents = match args.amount_cents {
        Some(amount) => amount,
        None => {
            let order = OrderId::parse(&args.order)
                .with_context(|| format!("{:?} is not an order id", args.order))?;
            order_total(config, order).await?
        }
    };
    let fresh = || uuid::Uuid::now_v7().simple().to_string();
    let body = serde_json::to_vec(&json!({
        "id": args.event_id.unwrap_or_else(|| format!("evt_{}", fresh())),
        "type": PAYMENT_SUCCEEDED,
        "orderId": args.order,
        "paymentReference": args.payment_reference.unwrap_or_else(|| format!("pay_{}", fresh())),
        "amountCents": amount_cents,
    }))?;
    let url = args.url.unwrap_or_else(|| default_url(config.listen_addr));
    let header = signature::sign(secret.as_bytes(), chrono::Utc::now().timestamp(), &body);
    let response = reqwest::Client::new()
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER, header)
        .body(body.clone())
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!("sent {}", String::from_utf8_lossy(&body));
    println!("{} {answer}", status.as_u16());
    anyhow::ensure!(status.is_success(), "the webhook answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_is_the_local_listener() {
        assert_eq!(
            default_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/webhooks/payment"
        );
        assert_eq!(
            default_url("127.0.0.1:9000".parse().unwrap()),
            "http://127.0.0.1:9000/webhooks/payment"
        );
    }
}
