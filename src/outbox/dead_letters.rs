//! The dead-letter stream of each store (`{prefix}:{store:S}:outbox:dead`): outbox entries
//! MySQL cannot take, each with the id it had and the reason. `flashstock audit` lists
//! them; `flashstock outbox replay-dead` writes them to MySQL once the cause is fixed and
//! removes those that went in.

use std::collections::HashMap;

use super::apply::{apply, is_refusal};
use super::consumer::{DEAD_ENTRY, DEAD_ERROR, Entry};
use super::event::OutboxEvent;
use crate::db::Db;
use crate::domain::StoreId;
use crate::hold::HoldEngine;

/// Entries read per round trip.
const PAGE: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub store: StoreId,
    /// Its id in the dead-letter stream.
    pub id: String,
    /// The id it had in the outbox.
    pub entry: String,
    pub error: String,
    /// The entry's own fields, as the script wrote them.
    pub fields: HashMap<String, String>,
}

impl DeadLetter {
    /// What the entry was, in a few words: "order <id> CONFIRMED", "restock <id>".
    pub fn summary(&self) -> String {
        let get = |name: &str| self.fields.get(name).map_or("?", String::as_str);
        match get("type") {
            "order" => format!("order {}-{} {}", self.store, get("order"), get("status")),
            "restock" => format!("restock {} of product {}", get("restock"), get("product")),
            other => format!("entry of type {other}"),
        }
    }
}

/// Keeps `entry` in its store's dead-letter stream with `reason`.
pub async fn add(engine: &HoldEngine, entry: &Entry, reason: &str) -> anyhow::Result<()> {
    let key = engine.keys().store(entry.store).dead_letters();
    let mut fields: Vec<(&str, &str)> = vec![(DEAD_ENTRY, entry.id.as_str()), (DEAD_ERROR, reason)];
    fields.extend(entry.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg(&fields)
        .query_async::<String>(&mut engine.redis())
        .await?;
    Ok(())
}

/// Up to `limit` dead letters of `store`, oldest first, and how many there are in all.
pub async fn list(
    engine: &HoldEngine,
    store: StoreId,
    limit: usize,
) -> anyhow::Result<(Vec<DeadLetter>, u64)> {
    let key = engine.keys().store(store).dead_letters();
    let mut redis = engine.redis();
    let total: u64 = redis::cmd("XLEN").arg(&key).query_async(&mut redis).await?;
    let mut found = Vec::new();
    let mut start = "-".to_owned();
    while found.len() < limit && (found.len() as u64) < total {
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE.min(limit - found.len()))
            .query_async(&mut redis)
            .await?;
        let Some((last, _)) = page.last() else { break };
        start = format!("({last}");
        found.extend(page.into_iter().map(|(id, mut fields)| DeadLetter {
            store,
            id,
            entry: fields.remove(DEAD_ENTRY).unwrap_or_default(),
            error: fields.remove(DEAD_ERROR).unwrap_or_default(),
            fields,
        }));
    }
    Ok((found, total))
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub replayed: usize,
    /// Still refused, with MySQL's answer this time.
    pub kept: Vec<(DeadLetter, String)>,
}

/// Writes every dead letter of `stores` to MySQL, one at a time, and removes each that
/// went in. One still refused stays, with the new reason reported. MySQL unreachable
/// stops the replay with an error (what was replayed so far stays replayed).
pub async fn replay(
    db: &Db,
    engine: &HoldEngine,
    stores: &[StoreId],
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut redis = engine.redis();
    for &store in stores {
        let key = engine.keys().store(store).dead_letters();
        let (letters, _) = list(engine, store, usize::MAX).await?;
        for letter in letters {
            let Some(event) = OutboxEvent::parse(store, &letter.fields) else {
                report.kept.push((letter, "not an outbox event".to_owned()));
                continue;
            };
            let reason = match apply(db, std::slice::from_ref(&event), None).await {
                Ok(refused) => refused.into_iter().next().map(|r| r.reason),
                Err(error) if is_refusal(&error) => Some(format!("{error:#}")),
                Err(error) => return Err(error.context("MySQL did not answer; replay stopped")),
            };
            match reason {
                Some(reason) => report.kept.push((letter, reason)),
                None => {
                    let _: u64 = redis::cmd("XDEL")
                        .arg(&key)
                        .arg(&letter.id)
                        .query_async(&mut redis)
                        .await?;
                    report.replayed += 1;
                }
            }
        }
    }
    Ok(report)
}

/// The `outbox replay-dead` command: replays, prints what stayed and why, and fails when
/// any did.
pub async fn run_replay(config: &crate::config::Config, store: Option<u64>) -> anyhow::Result<()> {
    let (db, engine) = crate::context::connect_for_command(config).await?;
    let stores = match store {
        Some(id) => vec![StoreId(id)],
        None => engine.stores().await?,
    };
    let report = replay(&db, &engine, &stores).await?;
    for (letter, reason) in &report.kept {
        println!(
            "KEPT store {} entry {} ({}): {reason}",
            letter.store,
            letter.entry,
            letter.summary()
        );
    }
    println!(
        "replayed {} dead letters; {} still refused",
        report.replayed,
        report.kept.len()
    );
    anyhow::ensure!(
        report.kept.is_empty(),
        "some dead letters are still refused"
    );
    Ok(())
}
