//! The Lua scripts, loaded once per process. Each body is prefixed with the shared
//! helpers of `lua/hold_lib.lua`, and those that give units back or hand them over also
//! with `lua/release_lib.lua`; `redis::Script` runs them by EVALSHA and reloads them
//! when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH). A script runs its
//! helpers' definitions on every call, so each gets only the ones it may use; and it
//! turns every key it is passed into a Lua string on every call, so the lock script
//! takes only the store keys it uses (`LOCK_STORE_KEYS`, set before the helpers as
//! `STORE_KEYS`).

use std::sync::LazyLock;

use redis::Script;

use super::keys::{LOCK_STORE_KEYS, STORE_KEYS};

const HOLD_LIB: &str = include_str!("../../lua/hold_lib.lua");
const RELEASE_LIB: &str = include_str!("../../lua/release_lib.lua");

/// `body` after the helpers, taking the first `store_keys` of the store's keys.
fn joined(store_keys: usize, body: &str) -> String {
    format!("local STORE_KEYS = {store_keys}\n{HOLD_LIB}\n{body}")
}

fn with_lib(body: &str) -> Script {
    Script::new(&joined(STORE_KEYS, body))
}

fn with_release_lib(body: &str) -> Script {
    with_lib(&format!("{RELEASE_LIB}\n{body}"))
}

pub struct Scripts {
    pub lock: Script,
    pub confirm: Script,
    pub cancel: Script,
    pub expire: Script,
    pub restock: Script,
    pub terms: Script,
    pub waitlist: Script,
    pub live_snapshot: Script,
}

pub static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    lock: Script::new(&joined(LOCK_STORE_KEYS, include_str!("../../lua/lock.lua"))),
    confirm: with_release_lib(include_str!("../../lua/confirm.lua")),
    cancel: with_release_lib(include_str!("../../lua/cancel.lua")),
    expire: with_release_lib(include_str!("../../lua/expire.lua")),
    restock: with_release_lib(include_str!("../../lua/restock.lua")),
    terms: with_lib(include_str!("../../lua/terms.lua")),
    waitlist: with_release_lib(include_str!("../../lua/waitlist.lua")),
    live_snapshot: with_lib(include_str!("../../lua/live_snapshot.lua")),
});
