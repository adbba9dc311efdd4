//! Validation results by operation and variables. Validation (the GraphQL rules, and the
//! depth and complexity the limits check) is a function of the schema, the document, the
//! operation name and the variables, nothing else: the same request validates the same way
//! every time. A sale's clients send the same operation with the same variables over and
//! over (one product, one unit), so a request identical to one that passed reuses its result
//! instead of walking the document again. Any other variables are validated from scratch, so
//! what depends on them (a connection's `first`, a variable's type) is still checked for them.
//!
//! Only results that passed are kept; a request that fails is validated every time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_graphql::{Request, ValidationResult};

/// Distinct (operation, variables) pairs kept; more than this empty the cache rather than
/// grow it, as the document cache does.
const MAX_RESULTS: usize = 1024;
/// Requests longer than this (query and variables as JSON) are validated every time.
const MAX_KEY_BYTES: usize = 4 * 1024 + 1024;

#[derive(Default)]
pub struct ValidationCache {
    results: RwLock<HashMap<String, ValidationResult>>,
}

/// What the `validation` hook needs to know about its request, handed over in the
/// request's data: the cache key and, when the request was seen before, its result.
pub struct RequestValidation {
    cache: Arc<ValidationCache>,
    key: String,
    pub known: Option<ValidationResult>,
}

impl RequestValidation {
    /// Keeps the result of a request that passed validation.
    pub fn remember(&self, result: ValidationResult) {
        let mut results = self
            .cache
            .results
            .write()
            .expect("validation cache lock poisoned");
        if results.len() >= MAX_RESULTS {
            results.clear();
        }
        results.insert(self.key.clone(), result);
    }
}

impl ValidationCache {
    /// The request's entry, or `None` when it is too large to be kept.
    pub fn look_up(self: &Arc<Self>, request: &Request) -> Option<RequestValidation> {
        let variables = serde_json::to_string(&request.variables).ok()?;
        let operation = request.operation_name.as_deref().unwrap_or_default();
        let length = request.query.len() + operation.len() + variables.len();
        if length > MAX_KEY_BYTES {
            return None;
        }
        // Each text behind its length, so no two requests share a key whatever they contain.
        let key = format!(
            "{}:{}{}:{}{variables}",
            request.query.len(),
            request.query,
            operation.len(),
            operation
        );
        let known = self
            .results
            .read()
            .expect("validation cache lock poisoned")
            .get(&key)
            .copied();
        Some(RequestValidation {
            cache: Arc::clone(self),
            key,
            known,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{CacheControl, Variables};

    fn result(complexity: usize) -> ValidationResult {
        ValidationResult {
            cache_control: CacheControl::default(),
            complexity,
            depth: 2,
        }
    }

    fn request(query: &str, variables: serde_json::Value) -> Request {
        Request::new(query).variables(Variables::from_json(variables))
    }

    #[test]
    fn a_result_is_reused_only_for_the_same_query_operation_and_variables() {
        let cache = Arc::new(ValidationCache::default());
        let first = request("query q($n: Int) { a }", serde_json::json!({"n": 1}));
        let entry = cache.look_up(&first).unwrap();
        assert!(entry.known.is_none());
        entry.remember(result(7));
        assert_eq!(cache.look_up(&first).unwrap().known.unwrap().complexity, 7);

        let other_variables = request("query q($n: Int) { a }", serde_json::json!({"n": 2}));
        assert!(cache.look_up(&other_variables).unwrap().known.is_none());
        let named = first.operation_name("q");
        assert!(cache.look_up(&named).unwrap().known.is_none());
        let other_query = request("query q($n: Int) { b }", serde_json::json!({"n": 1}));
        assert!(cache.look_up(&other_query).unwrap().known.is_none());
    }

    #[test]
    fn large_requests_are_never_kept_and_a_full_cache_starts_again() {
        let cache = Arc::new(ValidationCache::default());
        let long = request("{ a }", serde_json::json!({"s": "x".repeat(MAX_KEY_BYTES)}));
        assert!(cache.look_up(&long).is_none());
        for n in 0..=MAX_RESULTS {
            let entry = cache
                .look_up(&request("{ a }", serde_json::json!({ "n": n })))
                .unwrap();
            entry.remember(result(n));
        }
        assert_eq!(cache.results.read().unwrap().len(), 1);
    }
}
