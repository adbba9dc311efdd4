//! The Lua scripts, loaded once per process. Each body is prefixed with the shared
//! helpers of `lua/hold_lib.lua`; `redis::Script` runs them by EVALSHA and reloads them
//! when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH).

use std::sync::LazyLock;

use redis::Script;

const HOLD_LIB: &str = include_str!("../../lua/hold_lib.lua");

fn with_lib(body: &str) -> Script {
    Script::new(&format!("{HOLD_LIB}\n{body}"))
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
    confirm: with_lib(include_str!("../../lua/confirm.lua")),
    cancel: with_lib(include_str!("../../lua/cancel.lua")),
    expire: with_lib(include_str!("../../lua/expire.lua")),
    restock: with_lib(include_str!("../../lua/restock.lua")),
    terms: with_lib(include_str!("../../lua/terms.lua")),
    waitlist: with_lib(include_str!("../../lua/waitlist.lua")),
    live_snapshot: with_lib(include_str!("../../lua/live_snapshot.lua")),
});
