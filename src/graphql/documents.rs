//! Parsed GraphQL documents by query text. A sale's clients send the same few
//! operations over and over (with different variables), and parsing the text was the
//! largest single cost of a lockOrder request; a cached document is cloned instead.
//! Only documents that passed the query limits' costing are kept, so a cached document
//! needs no costing again. Validation depends on the variables too, so its results are
//! kept apart, by document and variables (`validated.rs`).

use std::collections::HashMap;
use std::sync::RwLock;

use async_graphql::parser::types::ExecutableDocument;

/// Enough for every operation a client app has; more distinct texts than this (someone
/// sending generated queries) empty the cache rather than grow it.
const MAX_DOCUMENTS: usize = 256;
/// Longer queries are parsed every time and never kept.
const MAX_QUERY_BYTES: usize = 4 * 1024;

#[derive(Default)]
pub struct DocumentCache {
    documents: RwLock<HashMap<String, ExecutableDocument>>,
}

impl DocumentCache {
    /// The document for `query`: from the cache, or from `admit` (which parses and costs
    /// it) and then kept. A document `admit` refuses is never kept.
    pub fn get_or_admit<E>(
        &self,
        query: &str,
        admit: impl FnOnce() -> Result<ExecutableDocument, E>,
    ) -> Result<ExecutableDocument, E> {
        let cached = self
            .documents
            .read()
            .expect("document cache lock poisoned")
            .get(query)
            .cloned();
        if let Some(document) = cached {
            return Ok(document);
        }
        let document = admit()?;
        if query.len() <= MAX_QUERY_BYTES {
            let mut documents = self
                .documents
                .write()
                .expect("document cache lock poisoned");
            if documents.len() >= MAX_DOCUMENTS {
                documents.clear();
            }
            documents.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn attach(cache: &DocumentCache, query: &str) -> bool {
        cache
            .get_or_admit(query, || parse_query(query).map_err(|_| ()))
            .is_ok()
    }

    fn kept(cache: &DocumentCache) -> usize {
        cache.documents.read().unwrap().len()
    }

    #[test]
    fn a_query_is_parsed_once_and_then_served_from_the_cache() {
        let cache = DocumentCache::default();
        let mut parsed = 0;
        for _ in 0..2 {
            let document = cache.get_or_admit("{ stores { id } }", || {
                parsed += 1;
                parse_query("{ stores { id } }")
            });
            assert!(document.is_ok());
        }
        assert_eq!(parsed, 1);
        assert_eq!(kept(&cache), 1);
    }

    #[test]
    fn broken_and_long_queries_are_not_kept() {
        let cache = DocumentCache::default();
        assert!(!attach(&cache, "{ stores { id "));
        assert!(attach(
            &cache,
            &format!("{{ {} }}", "stores { id } ".repeat(400))
        ));
        assert_eq!(kept(&cache), 0);
    }

    #[test]
    fn too_many_distinct_queries_empty_the_cache_instead_of_growing_it() {
        let cache = DocumentCache::default();
        for n in 0..=MAX_DOCUMENTS {
            attach(&cache, &format!("query q{n} {{ stores {{ id }} }}"));
        }
        assert_eq!(kept(&cache), 1);
    }
}
