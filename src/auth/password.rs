//! argon2id password hashes, computed off the async runtime (they cost milliseconds of CPU).

use std::num::NonZero;
use std::sync::LazyLock;
use std::thread::available_parallelism;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash};
use tokio::sync::Semaphore;

use crate::domain::Password;

/// A hash of nothing anyone knows: verifying against it makes a login for an unknown
/// email cost what a login for a known one costs.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(uuid::Uuid::new_v4().as_bytes())
        .expect("argon2 hashes a fixed-size input")
        .to_string()
});

/// Computes the dummy hash now, so that the first login for an unknown email does not
/// cost one hash more than every other login.
pub async fn prepare_dummy_hash() -> anyhow::Result<()> {
    tokio::task::spawn_blocking(|| LazyLock::force(&DUMMY_HASH).len()).await?;
    Ok(())
}

/// One hash or verification takes a core for tens of milliseconds and ~19 MiB (argon2's
/// default memory cost). At most one per core but one runs at once (one on a machine of one
/// or two cores): a burst of logins waits here instead of starting a blocking thread and
/// 19 MiB each (GiBs at a sale's opening), and a core always stays for lockOrder, the
/// health checks and the workers. A waiting login is bounded by REQUEST_TIMEOUT.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = available_parallelism().map_or(2, NonZero::get);
    Semaphore::new(cores.saturating_sub(1).max(1))
});

async fn hashing<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let _turn = HASHING.acquire().await?;
    tokio::task::spawn_blocking(|| {
        let result = work();
        // The hash's 19 MiB is freed by now; without this the idle blocking thread
        // would keep it resident (a login burst left ~65 MiB behind).
        crate::memory::return_freed_memory();
        result
    })
    .await?
}

pub async fn hash_password(password: &Password) -> anyhow::Result<String> {
    let password = password.clone();
    hashing(move || {
        Ok(Argon2::default()
            .hash_password(password.expose().as_bytes())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?
            .to_string())
    })
    .await
}

/// Verifies `password` against `stored`, or against a dummy hash when there is no user,
/// so both paths take the same time. True only for a real match.
pub async fn verify_password(password: &str, stored: Option<String>) -> anyhow::Result<bool> {
    let password = password.to_owned();
    hashing(move || {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| anyhow::anyhow!("stored hash is malformed: {e}"))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}
