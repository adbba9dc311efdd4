//! Liveness and readiness. Ready means both Redis and MySQL answer right now.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::HttpState;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Up or down. The reason is logged, not returned: /readyz is public, and driver errors
/// name users, hosts and addresses.
async fn probe<F>(name: &str, check: F) -> Result<(), ()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(
                dependency = name,
                error = format!("{error:#}"),
                "readiness check failed"
            );
            Err(())
        }
        Err(_) => {
            tracing::warn!(
                dependency = name,
                ?PROBE_TIMEOUT,
                "readiness check timed out"
            );
            Err(())
        }
    }
}

pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    let mut redis = state.app.redis.clone();
    let redis_check = probe("redis", async move {
        redis::cmd("PING").query_async::<String>(&mut redis).await?;
        Ok(())
    });
    let mysql_check = probe("mysql", crate::db::ping(&state.app.db));
    let (redis, mysql) = tokio::join!(redis_check, mysql_check);
    let status = if redis.is_ok() && mysql.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let describe = |result: &Result<(), ()>| match result {
        Ok(()) => json!({ "status": "up" }),
        Err(()) => json!({ "status": "down" }),
    };
    let body = json!({
        "status": if status == StatusCode::OK { "ready" } else { "unavailable" },
        "checks": { "redis": describe(&redis), "mysql": describe(&mysql) },
    });
    (status, Json(body))
}
