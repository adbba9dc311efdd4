//! The shared fast path for stockChanged on a WebSocket. During a sale thousands of
//! sockets follow the same product; executing the subscription's document once per socket
//! and per change (what async-graphql does) costs far more than the change itself. A
//! subscription written in the one standard form,
//!
//! ```graphql
//! subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }
//! ```
//!
//! (or with the ids written in the document, with or without an operation name), is served
//! here instead: its ids are checked and watched as the resolver would, and each update
//! sends the response the hub rendered once for that value (`live::Stock::response`),
//! wrapped in the protocol's `next` (or legacy `data`) message with the subscription's id.
//! Per socket and update that leaves a wake-up, a comparison and one frame.
//!
//! Anything else (aliases, `__typename`, other fields or order, fragments, directives,
//! ids that are not all known products, a document over the query limits, a reused id,
//! a subscription before `connection_ack`) goes to async-graphql unchanged, so what the
//! client sees is exactly what executing the document would give, errors included.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::Name;
use async_graphql::http::WebSocketProtocols;
use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
    Selection, SelectionSet, Type,
};
use async_graphql_value::Value;
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use crate::context::AppContext;
use crate::domain::ProductId;
use crate::graphql::{MAX_STOCK_PRODUCTS, SchemaLimits};
use crate::live::StockStream;

/// A subscribe (or legacy start) message whose document is the standard stockChanged.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainStockSubscription {
    pub id: String,
    /// As written, in order, duplicates included.
    pub product_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    payload: Payload,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Payload {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The standard form's depth (`stockChanged`, then its two fields) and complexity (one per
/// field), as async-graphql's validation counts them.
const STANDARD_DEPTH: usize = 2;
const STANDARD_COMPLEXITY: usize = 3;

/// The subscription in `message` if it is the standard stockChanged and within `limits`;
/// `None` sends the message on to async-graphql.
pub fn plain_stock_subscription(
    message: &[u8],
    limits: &SchemaLimits,
) -> Option<PlainStockSubscription> {
    let subscribe: Subscribe = serde_json::from_slice(message).ok()?;
    if !matches!(subscribe.kind.as_str(), "subscribe" | "start") {
        return None;
    }
    let payload = subscribe.payload;
    if payload.extensions.is_some_and(|e| !e.is_empty()) {
        return None;
    }
    // Depth and complexity are checked after validation, which this path skips: a service
    // configured below the standard form's own refuses it there, with its error.
    if limits.max_depth < STANDARD_DEPTH || limits.max_complexity < STANDARD_COMPLEXITY {
        return None;
    }
    let document = limits.admitted(&payload.query)?;
    let operation = only_operation(&document, payload.operation_name.as_deref())?;
    let argument = stock_changed_argument(operation)?;
    let variables = payload.variables.unwrap_or_default();
    let product_ids = match argument {
        Value::List(items) => {
            if !operation.variable_definitions.is_empty() || !variables.is_empty() {
                return None;
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(id) => Some(id.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?
        }
        Value::Variable(name) => {
            let [definition] = operation.variable_definitions.as_slice() else {
                return None;
            };
            let definition = &definition.node;
            let list_of_ids = Type {
                base: BaseType::List(Box::new(Type {
                    base: BaseType::Named(Name::new("ID")),
                    nullable: false,
                })),
                nullable: false,
            };
            if definition.name.node != *name
                || definition.var_type.node != list_of_ids
                || definition.default_value.is_some()
                || !definition.directives.is_empty()
                || variables.len() != 1
            {
                return None;
            }
            variables
                .get(name.as_str())?
                .as_array()?
                .iter()
                .map(|id| id.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?
        }
        _ => return None,
    };
    Some(PlainStockSubscription {
        id: subscribe.id,
        product_ids,
    })
}

fn only_operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    if !document.fragments.is_empty() {
        return None;
    }
    let operation = match &document.operations {
        DocumentOperations::Single(operation) if name.is_none() => &operation.node,
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            let (written, operation) = operations.iter().next()?;
            if name.is_some_and(|name| name != written.as_str()) {
                return None;
            }
            &operation.node
        }
        _ => return None,
    };
    (operation.ty == OperationType::Subscription && operation.directives.is_empty())
        .then_some(operation)
}

/// `productIds` of `{ stockChanged(productIds: ...) { productId available } }`, written
/// exactly so: no alias, no directive, no other field.
fn stock_changed_argument(operation: &OperationDefinition) -> Option<&Value> {
    let field = only_field(&operation.selection_set.node, "stockChanged")?;
    let [(argument, value)] = field.arguments.as_slice() else {
        return None;
    };
    if argument.node != "productIds" {
        return None;
    }
    let selected = &field.selection_set.node.items;
    let [Some(first), Some(second)] = [selected.first(), selected.get(1)].map(|s| {
        s.and_then(|s| match &s.node {
            Selection::Field(field) => Some(&field.node),
            _ => None,
        })
    }) else {
        return None;
    };
    let plain = |field: &async_graphql::parser::types::Field, name: &str| {
        field.name.node == name
            && field.alias.is_none()
            && field.arguments.is_empty()
            && field.directives.is_empty()
            && field.selection_set.node.items.is_empty()
    };
    (selected.len() == 2 && plain(first, "productId") && plain(second, "available"))
        .then_some(&value.node)
}

fn only_field<'s>(
    set: &'s SelectionSet,
    name: &str,
) -> Option<&'s async_graphql::parser::types::Field> {
    let [item] = set.items.as_slice() else {
        return None;
    };
    match &item.node {
        Selection::Field(field)
            if field.node.name.node == name
                && field.node.alias.is_none()
                && field.node.directives.is_empty() =>
        {
            Some(&field.node)
        }
        _ => None,
    }
}

/// Watches the subscription's products, or `None` when the resolver would refuse them
/// (empty, over the limit, malformed, unknown, or the catalog cannot be read): async-graphql
/// then runs the document and gives the client the resolver's own error.
pub async fn watch(app: &AppContext, product_ids: &[String]) -> Option<StockStream> {
    if product_ids.is_empty() || product_ids.len() > MAX_STOCK_PRODUCTS {
        return None;
    }
    let mut ids = Vec::with_capacity(product_ids.len());
    let mut seen = HashSet::with_capacity(product_ids.len());
    for raw in product_ids {
        let id = ProductId::parse(raw)?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    let rows = app.catalog.products(&ids).await.ok()?;
    let mut watches = Vec::with_capacity(ids.len());
    for id in ids {
        let row = rows.get(&id)?;
        watches.push(app.live.watch_product(row.store, id));
    }
    Some(StockStream::new(watches, Arc::clone(app.live.pace())))
}

/// The subscription's updates as the protocol's messages, each built from the shared
/// response; `None` once, when the stream ends (the protocol then says `complete`).
pub fn messages(
    stream: StockStream,
    id: &str,
    protocol: WebSocketProtocols,
) -> impl Stream<Item = Option<String>> + Send + 'static {
    // `{"type":"next","id":"<id>","payload":` as serde writes async-graphql's messages.
    let head: Arc<str> = format!(
        r#"{{"type":"{}","id":{},"payload":"#,
        match protocol {
            WebSocketProtocols::GraphQLWS => "next",
            WebSocketProtocols::SubscriptionsTransportWS => "data",
        },
        serde_json::Value::from(id)
    )
    .into();
    stream
        .into_stream()
        .map(move |update| {
            let mut message = String::with_capacity(head.len() + update.response.len() + 1);
            message.push_str(&head);
            message.push_str(&update.response);
            message.push('}');
            Some(message)
        })
        .chain(futures_util::stream::once(async { None }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SchemaLimits {
        SchemaLimits {
            max_depth: 10,
            max_complexity: 100,
            max_selections: 100,
            max_tokens: 1000,
            max_directives: 5,
            introspection: false,
        }
    }

    fn subscribe(payload: serde_json::Value) -> Vec<u8> {
        serde_json::json!({ "type": "subscribe", "id": "s1", "payload": payload })
            .to_string()
            .into_bytes()
    }

    fn plain(payload: serde_json::Value) -> Option<Vec<String>> {
        plain_stock_subscription(&subscribe(payload), &limits()).map(|s| s.product_ids)
    }

    const STANDARD: &str =
        "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }";

    #[test]
    fn the_standard_forms_are_plain() {
        let ids = Some(vec!["1".to_owned(), "2".to_owned()]);
        assert_eq!(
            plain(serde_json::json!({ "query": STANDARD, "variables": { "ids": ["1", "2"] } })),
            ids
        );
        assert_eq!(
            plain(serde_json::json!({
                "query": "subscription Live($p: [ID!]!) { stockChanged(productIds: $p) { productId available } }",
                "variables": { "p": ["1", "2"] },
                "operationName": "Live",
            })),
            ids
        );
        assert_eq!(
            plain(serde_json::json!({
                "query": r#"subscription { stockChanged(productIds: ["1", "2"]) { productId available } }"#,
                "extensions": {},
            })),
            ids
        );
        let legacy = serde_json::json!({
            "type": "start", "id": "a\"b", "payload": { "query": STANDARD, "variables": { "ids": ["7"] } },
        });
        let found = plain_stock_subscription(legacy.to_string().as_bytes(), &limits()).unwrap();
        assert_eq!(found.id, "a\"b");
    }

    #[test]
    fn anything_else_goes_to_the_executor() {
        let ids = serde_json::json!({ "ids": ["1"] });
        for query in [
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { available productId } }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available __typename } }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId left: available } }",
            "subscription($ids: [ID!]!) { s: stockChanged(productIds: $ids) { productId available } }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available @include(if: true) } }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { ...F } } fragment F on StockUpdate { productId available }",
            "subscription($ids: [ID!]) { stockChanged(productIds: $ids) { productId available } }",
            "subscription($ids: [ID!]! = [\"1\"]) { stockChanged(productIds: $ids) { productId available } }",
            "subscription($ids: [ID!]!, $x: Int) { stockChanged(productIds: $ids) { productId available } }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } orderChanged { id } }",
            "query($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } }",
            "subscription A($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available } } subscription B { x }",
            "subscription($ids: [ID!]!) { stockChanged(productIds: $ids) { productId available }",
        ] {
            assert_eq!(
                plain(serde_json::json!({ "query": query, "variables": ids })),
                None,
                "{query}"
            );
        }
        for payload in [
            serde_json::json!({ "query": STANDARD, "variables": { "ids": [1] } }),
            serde_json::json!({ "query": STANDARD, "variables": { "ids": "1" } }),
            serde_json::json!({ "query": STANDARD, "variables": { "other": ["1"] } }),
            serde_json::json!({ "query": STANDARD, "variables": { "ids": ["1"], "x": 1 } }),
            serde_json::json!({ "query": STANDARD, "variables": { "ids": ["1"] }, "operationName": "X" }),
            serde_json::json!({ "query": STANDARD, "variables": { "ids": ["1"] }, "extensions": { "persistedQuery": {} } }),
            serde_json::json!({ "query": "subscription { stockChanged(productIds: [1]) { productId available } }" }),
            serde_json::json!({ "query": "subscription { stockChanged(productIds: \"1\") { productId available } }" }),
        ] {
            assert_eq!(plain(payload.clone()), None, "{payload}");
        }
        let tight = SchemaLimits {
            max_tokens: 5,
            ..limits()
        };
        let message = subscribe(serde_json::json!({ "query": STANDARD, "variables": ids }));
        assert_eq!(plain_stock_subscription(&message, &tight), None);
        for tight in [
            SchemaLimits {
                max_depth: 1,
                ..limits()
            },
            SchemaLimits {
                max_complexity: 2,
                ..limits()
            },
        ] {
            assert_eq!(plain_stock_subscription(&message, &tight), None);
        }
        let just_enough = SchemaLimits {
            max_depth: 2,
            max_complexity: 3,
            ..limits()
        };
        assert!(plain_stock_subscription(&message, &just_enough).is_some());
    }
}
