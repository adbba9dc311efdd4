//! Parsed GraphQL documents by query text. A sale's clients send the same few
//! operations over and over (with different variables), and parsing the text was the
//! largest single cost of a lockOrder request; a cached document is cloned instead.
//! Depth, complexity and validation still run on every request.

use std::collections::HashMap;
use std::sync::RwLock;

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{BatchRequest, Request};

/// Enough for every operation a client app has; more distinct texts than this (someone
/// sending generated queries) empty the cache rather than grow it.
const MAX_DOCUMENTS: usize = 256;
/// Longer queries are parsed every time and never kept.
const MAX_QUERY_BYTES: usize = 4 * 1024;
/// Deeper bracket nesting than any storefront query: left to the query limits, which
/// refuse it before the parser sees it.
const MAX_NESTING: usize = 32;

#[derive(Default)]
pub struct ParsedQueries {
    documents: RwLock<HashMap<String, ExecutableDocument>>,
}

impl ParsedQueries {
    /// Gives every request of the batch its parsed document, from the cache or parsed
    /// now. A query that does not parse is left alone: executing it reports the error.
    pub fn attach(&self, batch: &mut BatchRequest) {
        for request in batch.iter_mut() {
            self.attach_one(request);
        }
    }

    fn attach_one(&self, request: &mut Request) {
        if request.query.len() > MAX_QUERY_BYTES
            || crate::graphql::nesting(&request.query) > MAX_NESTING
        {
            return;
        }
        let cached = self
            .documents
            .read()
            .expect("query cache lock poisoned")
            .get(&request.query)
            .cloned();
        if let Some(document) = cached {
            request.set_parsed_query(document);
            return;
        }
        let Ok(document) = request.parsed_query().cloned() else {
            return;
        };
        let mut documents = self.documents.write().expect("query cache lock poisoned");
        if documents.len() >= MAX_DOCUMENTS {
            documents.clear();
        }
        documents.insert(request.query.clone(), document);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(query: &str) -> BatchRequest {
        BatchRequest::Single(Request::new(query))
    }

    #[test]
    fn a_query_is_parsed_once_and_then_served_from_the_cache() {
        let cache = ParsedQueries::default();
        let mut first = single("{ stores { id } }");
        cache.attach(&mut first);
        let mut second = single("{ stores { id } }");
        cache.attach(&mut second);
        assert_eq!(cache.documents.read().unwrap().len(), 1);
        let BatchRequest::Single(mut request) = second else {
            unreachable!()
        };
        assert!(request.parsed_query().is_ok());
    }

    #[test]
    fn broken_and_long_queries_are_not_kept() {
        let cache = ParsedQueries::default();
        cache.attach(&mut single("{ stores { id "));
        cache.attach(&mut single(&format!(
            "{{ {} }}",
            "stores { id } ".repeat(400)
        )));
        assert!(cache.documents.read().unwrap().is_empty());
    }

    #[test]
    fn too_many_distinct_queries_empty_the_cache_instead_of_growing_it() {
        let cache = ParsedQueries::default();
        for n in 0..=MAX_DOCUMENTS {
            cache.attach(&mut single(&format!("query q{n} {{ stores {{ id }} }}")));
        }
        assert_eq!(cache.documents.read().unwrap().len(), 1);
    }
}
