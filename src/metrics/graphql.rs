//! Times every GraphQL operation, parse to response, labelled by its root field. Root
//! fields are the schema's (`lockOrder`, `products`, ...), a set the client cannot grow:
//! a field the schema does not have is `unknown`, a query that does not parse `invalid`.
//! The field is also recorded on the request's log span.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationDefinition, Selection,
};
use async_graphql::registry::Registry;
use async_graphql::{Request, Response, ServerResult, Variables};
use tokio::time::Instant;

#[derive(Default)]
pub struct GraphqlTiming;

impl ExtensionFactory for GraphqlTiming {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Timing::default())
    }
}

#[derive(Default)]
struct Timing {
    /// Chosen by the client only to pick one operation of a document; never a label.
    operation_name: Mutex<Option<String>>,
    field: OnceLock<&'static str>,
}

/// The schema's root field names, leaked once: they are labels for the process's life.
fn root_fields(registry: &Registry) -> &'static HashSet<&'static str> {
    static FIELDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let roots = [
            Some(&registry.query_type),
            registry.mutation_type.as_ref(),
            registry.subscription_type.as_ref(),
        ];
        let mut names: HashSet<&'static str> = ["__schema", "__type", "__typename"].into();
        for root in roots.into_iter().flatten() {
            if let Some(fields) = registry.types.get(root).and_then(|t| t.fields()) {
                for name in fields.keys() {
                    names.insert(Box::leak(name.clone().into_boxed_str()));
                }
            }
        }
        names
    })
}

/// The first field the operation selects, looking through fragments.
fn first_field<'d>(
    document: &'d ExecutableDocument,
    operation: &'d OperationDefinition,
) -> Option<&'d str> {
    let mut set = &operation.selection_set.node;
    // Bounded: a fragment cycle is a validation error, and this never loops on one.
    for _ in 0..16 {
        set = match &set.items.first()?.node {
            Selection::Field(field) => return Some(field.node.name.node.as_str()),
            Selection::InlineFragment(inline) => &inline.node.selection_set.node,
            Selection::FragmentSpread(spread) => {
                &document
                    .fragments
                    .get(&spread.node.fragment_name.node)?
                    .node
                    .selection_set
                    .node
            }
        };
    }
    None
}

fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|o| &o.node)
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|o| &o.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Timing {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let field = self.field.get().copied().unwrap_or("invalid");
        super::graphql_request(field, started.elapsed());
        response
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Some(name) = &request.operation_name {
            *self.operation_name.lock().expect("operation name lock") = Some(name.clone());
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
        let document = next.run(ctx, query, variables).await?;
        let name = self
            .operation_name
            .lock()
            .expect("operation name lock")
            .take();
        let written =
            operation(&document, name.as_deref()).and_then(|op| first_field(&document, op));
        let field = match written {
            Some(written) => root_fields(&ctx.schema_env.registry)
                .get(written)
                .copied()
                .unwrap_or("unknown"),
            None => "unknown",
        };
        let _ = self.field.set(field);
        tracing::Span::current().record("graphql_field", field);
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(query: &str, name: Option<&str>) -> Option<String> {
        let document = async_graphql::parser::parse_query(query).unwrap();
        operation(&document, name)
            .and_then(|op| first_field(&document, op))
            .map(str::to_owned)
    }

    #[test]
    fn the_root_field_is_found_through_fragments_and_named_operations() {
        assert_eq!(
            field_of("{ products { id } me { id } }", None).as_deref(),
            Some("products")
        );
        assert_eq!(
            field_of(
                "mutation M { lockOrder(input: {items: []}) { errors { code } } }",
                None
            )
            .as_deref(),
            Some("lockOrder")
        );
        assert_eq!(
            field_of("query A { me { id } } query B { stores { id } }", Some("B")).as_deref(),
            Some("stores")
        );
        assert_eq!(
            field_of("query A { me { id } } query B { stores { id } }", None),
            None
        );
        assert_eq!(
            field_of(
                "query { ...F } fragment F on Query { ... on Query { order(id: 1) { id } } }",
                None
            )
            .as_deref(),
            Some("order")
        );
    }
}
