//! Notices when the Redis behind the connection is another server than before (it
//! restarted, or a replica was promoted): its `run_id` changed. Every store is then
//! checked against MySQL and rebuilt where Redis is behind, before it takes orders again.
//! A script call that loses its connection, or this watcher seeing another server, stops
//! every store at once (`HoldEngine::server_unverified`) until the watcher has checked the
//! server: no order is taken on a restarted server or a promoted replica before it was
//! checked.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::context::AppContext;

/// How often the server's run id is read: the longest a restarted Redis may serve
/// scripts on stale data before its stores are marked as recovering.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// The id Redis gives itself each time it starts. On a cluster, every master's, with its
/// address: it changes when any master restarts or a replica is promoted.
pub async fn run_id(engine: &crate::hold::HoldEngine) -> anyhow::Result<String> {
    let mut infos: Vec<(String, String)> = engine
        .redis()
        .on_masters(redis::cmd("INFO").arg("server"))
        .await?;
    infos.sort();
    let ids = infos
        .iter()
        .map(|(node, info)| {
            info.lines()
                .find_map(|line| line.strip_prefix("run_id:"))
                .map(|id| id.trim())
                .ok_or_else(|| anyhow::anyhow!("INFO server of {node} has no run_id"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !engine.redis().is_cluster()
        && let [id] = ids.as_slice()
    {
        return Ok((*id).to_owned());
    }
    // The client answers for the masters it is connected to; the cluster's own view names
    // a promoted replica as soon as the failover is done.
    let mut masters: Vec<String> = engine
        .redis()
        .nodes()
        .await?
        .into_iter()
        .filter(|node| node.master && !node.slots.is_empty())
        .map(|node| node.addr.to_string())
        .collect();
    masters.sort();
    let answered = infos
        .iter()
        .zip(&ids)
        .map(|((node, _), id)| format!("{node}={id}"))
        .collect::<Vec<_>>()
        .join(",");
    Ok(format!("{answered}; masters {}", masters.join(",")))
}

pub async fn watch(app: AppContext, stop: CancellationToken) {
    // Start-up checked every store against this server: only another one needs a check.
    // (Checking again here would stop every store's orders for the check's length.)
    let mut known: Option<String> = Some(app.checked_server.clone());
    // Set when the server changed and not every store was checked since.
    let mut unchecked = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        // Failures seen before this look at the server are covered by it.
        let mut failures = app.engine.connection_failures();
        let Ok(current) = run_id(&app.engine).await else {
            continue;
        };
        if known.as_ref().is_some_and(|known| *known != current) {
            tracing::warn!(
                run_id = current,
                "another Redis server answers (restarted or promoted); checking every store against MySQL"
            );
            // No store takes orders until the check below succeeds: a check that fails
            // (a slot still without a master) clears the stores' own marks, and a
            // promoted replica behind MySQL must not sell meanwhile.
            app.engine.server_changed();
            failures = app.engine.connection_failures();
            unchecked = true;
        }
        known = Some(current);
        if unchecked {
            match super::ensure_all(&app.db, &app.engine).await {
                Ok(rebuilt) => {
                    tracing::info!(rebuilt, "every store checked against MySQL");
                    unchecked = false;
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "store check failed; trying again"
                    );
                    continue;
                }
            }
        }
        app.engine.checked_up_to(failures);
    }
}
