//! The process's allocator. Every request allocates and frees dozens of small objects
//! across the runtime's threads; mimalloc does that for markedly less CPU than glibc's
//! malloc (docs/BENCHMARKS.md). Declared in the library so the tests run on it too.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives the memory this thread has freed back to the system now rather than after
/// mimalloc's purge delay. For the rare thread that frees one very large block (an
/// argon2 hash's ~19 MiB) and then sits idle: left alone, that block would stay
/// resident until the thread allocates again.
pub fn return_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own free lists and purges what is unused;
    // it takes no pointers and is safe to call from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
