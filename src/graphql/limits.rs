//! Query limits and request-level error codes. Runs around async-graphql's own parse and
//! validation so that every refusal carries a code: a nesting check on the raw text before
//! the parser (which recurses per bracket), then depth and complexity from the validated
//! document, each with the measured value and the limit in the message.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};

use crate::error::codes;

#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub introspection: bool,
}

impl QueryLimits {
    /// Brackets a query may nest in its text. A field level opens one selection set;
    /// argument objects and lists open a few more, hence the factor.
    pub fn max_nesting(&self) -> usize {
        self.max_depth.saturating_mul(2).max(16)
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

fn refusal(code: &str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

fn over_limit(code: &str, what: &str, value: usize, limit: usize) -> ServerError {
    refusal(
        code,
        format!("query {what} is {value}; at most {limit} is allowed"),
    )
}

/// Gives `code` to every error that has none yet.
fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

/// The deepest bracket nesting (`{`, `(`, `[`) outside strings and comments.
pub(crate) fn nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Calls `visit` with every field written in the document, fragments once each.
fn each_field(doc: &ExecutableDocument, visit: &mut impl FnMut(&str)) {
    fn walk(set: &SelectionSet, visit: &mut impl FnMut(&str)) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    visit(field.node.name.node.as_str());
                    walk(&field.node.selection_set.node, visit);
                }
                Selection::InlineFragment(inline) => walk(&inline.node.selection_set.node, visit),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    for (_, operation) in doc.operations.iter() {
        walk(&operation.node.selection_set.node, visit);
    }
    for fragment in doc.fragments.values() {
        walk(&fragment.node.selection_set.node, visit);
    }
}

/// Fields written in the document, fragments counted once. Each costs at least 1 in the
/// complexity too (`__typename` aside), so a count over the limit can be refused before
/// validation, which is the expensive step for a query of thousands of aliases.
fn written_fields(doc: &ExecutableDocument) -> (usize, bool) {
    let (mut fields, mut introspects) = (0, false);
    each_field(doc, &mut |name| {
        fields += 1;
        introspects |= name == "__schema" || name == "__type";
    });
    (fields, introspects)
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let nested = nesting(query);
        if nested > self.max_nesting() {
            return Err(over_limit(
                codes::TOO_DEEP,
                "bracket nesting",
                nested,
                self.max_nesting(),
            ));
        }
        let doc = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, codes::PARSE_FAILED))?;
        let (fields, introspects) = written_fields(&doc);
        // With introspection off async-graphql answers `__schema: null`; say why instead.
        if introspects && !self.introspection {
            return Err(refusal(
                codes::VALIDATION_FAILED,
                "introspection is disabled on this server (GRAPHQL_INTROSPECTION)".into(),
            ));
        }
        if fields > self.max_complexity {
            return Err(over_limit(
                codes::TOO_COMPLEX,
                "field count",
                fields,
                self.max_complexity,
            ));
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, codes::VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        if result.depth > self.max_depth {
            return Err(vec![over_limit(
                codes::TOO_DEEP,
                "depth",
                result.depth,
                self.max_depth,
            )]);
        }
        if result.complexity > self.max_complexity {
            return Err(vec![over_limit(
                codes::TOO_COMPLEX,
                "complexity",
                result.complexity,
                self.max_complexity,
            )]);
        }
        Ok(result)
    }

    /// Every resolver error carries its code (`ApiError`); errors without one come from
    /// async-graphql coercing an argument (a number beyond Int, say) before the resolver
    /// ran, so they are input that does not fit the schema.
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        response.errors = std::mem::take(&mut response.errors)
            .into_iter()
            .map(|e| with_code(e, codes::VALIDATION_FAILED))
            .collect();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_brackets_but_not_strings_or_comments() {
        assert_eq!(nesting("{ a }"), 1);
        assert_eq!(nesting("{ a(x: [{ y: 1 }]) { b } }"), 4);
        assert_eq!(nesting(r#"{ a(s: "{{{{[[[(") }"#), 2);
        assert_eq!(nesting("{ a(s: \"\"\"{{{{\"\"\") }"), 2);
        assert_eq!(nesting("# {{{{{\n{ a }"), 1);
        assert_eq!(nesting(r#"{ a(s: "\"{{") }"#), 2);
        assert_eq!(nesting(&"{a".repeat(1000)), 1000);
    }
}
