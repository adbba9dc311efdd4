//! Query limits and request-level error codes. Every document is costed before anything
//! expensive runs, in time linear in its size, at the one point every transport passes
//! through (the `prepare_request` hook, ahead of the library's parser, its recursion check
//! and validation): bracket nesting and tokens on the raw text, then selections, fields,
//! depth and directives with fragment spreads expanded through a memo (`cost.rs`). Depth
//! and complexity from the validated document (they depend on the variables) follow.
//! Each refusal carries a code, the measured value and the limit.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest,
    NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};

use super::cost::{CostError, DocumentCost, cost};
use super::documents::DocumentCache;
use super::text::scan;
use super::validated::{RequestValidation, ValidationCache};
use crate::error::codes;

/// The limits, as configured (see docs/HARDENING.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_selections: usize,
    pub max_tokens: usize,
    pub max_directives: usize,
    pub introspection: bool,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            max_depth: config.graphql_max_depth,
            max_complexity: config.graphql_max_complexity,
            max_selections: config.graphql_max_selections,
            max_tokens: config.graphql_max_tokens,
            max_directives: config.graphql_max_directives,
            introspection: config.graphql_introspection,
        }
    }

    /// The parsed document if `query` is within every limit checked before validation;
    /// `None` for anything the schema would refuse or could not parse.
    pub fn admitted(&self, query: &str) -> Option<ExecutableDocument> {
        self.admit(query).ok()
    }

    /// Brackets a query may nest in its text, and selection sets it may nest once its
    /// fragments are expanded. A field level opens one selection set; argument objects,
    /// lists and fragments open a few more, hence the factor.
    pub fn max_nesting(&self) -> usize {
        self.max_depth.saturating_mul(2).max(16)
    }
}

/// The schema extension: the limits, the cache of documents that passed them and the
/// results of requests that passed validation.
#[derive(Clone)]
pub struct QueryLimits {
    limits: Limits,
    documents: Arc<DocumentCache>,
    validated: Arc<ValidationCache>,
}

impl QueryLimits {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            documents: Arc::default(),
            validated: Arc::default(),
        }
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
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

fn over_limit(code: &str, what: &str, value: impl std::fmt::Display, limit: usize) -> ServerError {
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

impl Limits {
    /// Refuses text the parser should not be handed.
    fn check_text(&self, query: &str) -> ServerResult<()> {
        let shape = scan(query);
        if shape.nesting > self.max_nesting() {
            return Err(over_limit(
                codes::TOO_DEEP,
                "bracket nesting",
                shape.nesting,
                self.max_nesting(),
            ));
        }
        if shape.tokens > self.max_tokens {
            return Err(over_limit(
                codes::TOO_COMPLEX,
                "token count",
                shape.tokens,
                self.max_tokens,
            ));
        }
        Ok(())
    }

    /// Refuses a document whose expansion is over a limit, before any pass that expands it.
    fn check_document(&self, doc: &ExecutableDocument) -> ServerResult<()> {
        let cost: DocumentCost = cost(doc).map_err(|CostError::FragmentCycle(names)| {
            refusal(
                codes::VALIDATION_FAILED,
                format!(
                    "fragments spread each other in a cycle: {}",
                    names.join(" -> ")
                ),
            )
        })?;
        // Size first: a document both too large and too deep is refused for its size.
        let checks = [
            (
                codes::TOO_COMPLEX,
                "selection count (fragments expanded)",
                cost.selections,
                self.max_selections,
            ),
            (
                codes::TOO_COMPLEX,
                "field count (fragments expanded)",
                cost.fields,
                self.max_complexity,
            ),
            (
                codes::TOO_COMPLEX,
                "directive count on one selection",
                cost.directives_on_one,
                self.max_directives,
            ),
            (
                codes::TOO_DEEP,
                "selection-set nesting (fragments expanded)",
                cost.nesting,
                self.max_nesting(),
            ),
            (codes::TOO_DEEP, "depth", cost.field_depth, self.max_depth),
        ];
        for (code, what, value, limit) in checks {
            if value > limit as u64 {
                return Err(over_limit(code, what, value, limit));
            }
        }
        // With introspection off async-graphql answers `__schema: null`; say why instead.
        if cost.introspects && !self.introspection {
            return Err(refusal(
                codes::VALIDATION_FAILED,
                "introspection is disabled on this server (GRAPHQL_INTROSPECTION)".into(),
            ));
        }
        Ok(())
    }

    /// Parses and costs `query`: the only way a document reaches the library.
    fn admit(&self, query: &str) -> ServerResult<ExecutableDocument> {
        self.check_text(query)?;
        let doc = async_graphql::parser::parse_query(query)
            .map_err(|e| with_code(ServerError::from(e), codes::PARSE_FAILED))?;
        self.check_document(&doc)?;
        Ok(doc)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimits {
    /// Hands the library a document that passed the limits, so its own parse, recursion
    /// check and validation only ever see documents of bounded expanded size.
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let document = self
            .documents
            .get_or_admit(&request.query, || self.limits.admit(&request.query))?;
        request.set_parsed_query(document);
        if let Some(validation) = self.validated.look_up(&request) {
            request.data.insert(validation);
        }
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, codes::PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        // The same request passed before: its result is the one validation would give.
        let cached = ctx.data_opt::<RequestValidation>();
        if let Some(known) = cached.and_then(|validation| validation.known) {
            return Ok(known);
        }
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, codes::VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        if result.depth > self.limits.max_depth {
            return Err(vec![over_limit(
                codes::TOO_DEEP,
                "depth",
                result.depth,
                self.limits.max_depth,
            )]);
        }
        if result.complexity > self.limits.max_complexity {
            return Err(vec![over_limit(
                codes::TOO_COMPLEX,
                "complexity",
                result.complexity,
                self.limits.max_complexity,
            )]);
        }
        if let Some(validation) = cached {
            validation.remember(result);
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
