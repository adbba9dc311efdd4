//! The Lua scripts, loaded once per process. Each body is prefixed with the shared
//! helpers of `lua/hold_lib.lua`, and those that give units back or hand them over also
//! with `lua/release_lib.lua`; `redis::Script` runs them by EVALSHA and reloads them
//! when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH). A script runs its
//! helpers' definitions on every call, so each gets only the ones it may use.

use std::sync::LazyLock;

use redis::Script;

const HOLD_LIB: &str = include_str!("../../lua/hold_lib.lua");
const RELEASE_LIB: &str = include_str!("../../lua/release_lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{HOLD_LIB}\n{body}"))
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
    lock: with_lib(include_str!("../../lua/lock.lua")),
    confirm: with_release_lib(include_str!("../../lua/confirm.lua")),
    cancel: with_release_lib(include_str!("../../lua/cancel.lua")),
    expire: with_release_lib(include_str!("../../lua/expire.lua")),
    restock: with_release_lib(include_str!("../../lua/restock.lua")),
    terms: with_lib(include_str!("../../lua/terms.lua")),
    waitlist: with_release_lib(include_str!("../../lua/waitlist.lua")),
    live_snapshot: with_lib(include_str!("../../lua/live_snapshot.lua")),
});
