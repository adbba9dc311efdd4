//! Metric handles by label values. The `metrics` macros build and look up a key on every
//! call, and allocate its label list when a value is not a literal; a handle kept here is
//! registered on first use, and every later recording is one hash lookup under a read lock
//! and an atomic add. Keys are `&'static str` from bounded sets, so the map stays small.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;

pub struct Handles<K, H> {
    registered: RwLock<HashMap<K, H>>,
    register: fn(K) -> H,
}

impl<K: Copy + Eq + Hash, H: Clone> Handles<K, H> {
    pub fn new(register: fn(K) -> H) -> Self {
        Self {
            registered: RwLock::new(HashMap::new()),
            register,
        }
    }

    /// The handle for `labels`. Call only once a recorder is installed: a handle made
    /// before that records nothing, and would be kept.
    pub fn get(&self, labels: K) -> H {
        if let Some(handle) = self
            .registered
            .read()
            .expect("metric handles lock")
            .get(&labels)
        {
            return handle.clone();
        }
        self.registered
            .write()
            .expect("metric handles lock")
            .entry(labels)
            .or_insert_with(|| (self.register)(labels))
            .clone()
    }
}
