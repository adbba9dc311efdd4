//! Faults under load: a killed instance, a refused event, a stop with a backlog. Each
//! ends with `flashstock audit` clean and every confirmed order once in MySQL, and prints
//! how long orders took to flow again and MySQL to catch up (`-- --nocapture`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flashstock::domain::StoreId;

use crate::flush::{
    DRAIN_DEADLINE, Sale, assert_exactly_once, confirm_load, confirm_without_flusher,
    confirmed_in_mysql, flusher, kill_mid_flush, open_sale, run_audit, wait_drained,
};
use crate::helpers::{TestApp, one_at_a_time, spawn_app};
use crate::process::ServiceProcess;

/// Every consumer of the store's outbox group, with the entries pending on it.
async fn consumers(app: &TestApp, store: StoreId) -> HashMap<String, u64> {
    let reply: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(app.keys.store(store).outbox)
        .arg("flusher")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|c| {
            (
                redis::from_redis_value_ref(&c["name"]).unwrap(),
                redis::from_redis_value_ref(&c["pending"]).unwrap(),
            )
        })
        .collect()
}

/// The consumer name an instance takes by default: host name and its pid.
fn consumer_of(service: &ServiceProcess) -> String {
    let ours = flashstock::outbox::default_name();
    let (host, _) = ours.rsplit_once('-').unwrap();
    format!("{host}-{}", service.pid())
}

/// Waits until MySQL has `total` confirmed orders; returns when it got there.
async fn wait_confirmed(app: &TestApp, total: usize) -> Instant {
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while confirmed_in_mysql(app).await < total as i64 {
        assert!(Instant::now() < deadline, "MySQL never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

async fn assert_audit_clean(app: &TestApp) {
    let (clean, output) = run_audit(app);
    assert!(clean, "{output}");
    assert!(output.contains(" 0 mismatches"), "{output}");
}

async fn sale_with_backlog(
    app: &mut TestApp,
    orders: usize,
) -> (
    Sale,
    Vec<(String, Vec<(flashstock::domain::ProductId, u32)>)>,
) {
    let sale = open_sale(app, 40).await;
    app.stop().await;
    let backlog = confirm_without_flusher(app, &sale, 0..orders).await;
    (sale, backlog)
}

#[tokio::test]
async fn a_killed_instance_s_orders_reach_mysql_within_seconds_of_the_restart() {
    let _serial = one_at_a_time().await;
    let mut app = spawn_app().await;
    let (sale, mut orders) = sale_with_backlog(&mut app, 600).await;

    // Small batches, so the kill lands while a batch is delivered and not yet acknowledged.
    let mut killed = flusher(&app, &app.database_url, &[("FLUSH_BATCH", "5")]);
    kill_mid_flush(&app, &mut killed, orders.len()).await;
    let dead = consumer_of(&killed);
    let left = consumers(&app, sale.store).await;
    assert!(
        left.get(&dead).copied().unwrap_or(0) > 0,
        "nothing pending on the killed consumer: {left:?}"
    );

    // Restarted as a new consumer (a new pid), with a second instance beside it on the
    // same host; FLUSH_CLAIM_IDLE stays at its 30 s default and plays no part.
    let restarted_at = Instant::now();
    let restarted = flusher(&app, &app.database_url, &[]).ready().await;
    let neighbour = flusher(&app, &app.database_url, &[]).ready().await;
    let http = reqwest::Client::new();
    let flowing = confirm_load(&http, &restarted.address, &sale, 600..601).await;
    let flowing_after = restarted_at.elapsed();
    orders.extend(flowing);
    orders.extend(confirm_load(&http, &restarted.address, &sale, 601..700).await);
    let caught_up = wait_confirmed(&app, orders.len()).await - restarted_at;
    eprintln!(
        "SIGKILL + restart: orders flowed again {flowing_after:?} after the restart, \
         MySQL caught up after {caught_up:?}"
    );
    assert!(
        caught_up < Duration::from_secs(10),
        "MySQL caught up only after {caught_up:?}"
    );

    // The departed consumer leaves the group once it owns nothing; the two live ones
    // never took over each other's entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumers(&app, sale.store).await.contains_key(&dead) {
        assert!(
            Instant::now() < deadline,
            "the departed consumer stayed in the group"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (service, other) in [(&restarted, &neighbour), (&neighbour, &restarted)] {
        let log = service.log_text();
        assert!(
            !log.lines()
                .any(|line| line.contains("took over") && line.contains(&consumer_of(other))),
            "{log}"
        );
    }
    wait_drained(&app).await;
    assert_exactly_once(&app, &orders, &sale.prices, &sale.opening).await;
    assert_audit_clean(&app).await;
}
