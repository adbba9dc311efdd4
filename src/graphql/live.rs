//! Subscriptions: stockChanged (public) and orderChanged (the viewer's orders). Both read
//! the process's one live feed (`crate::live`); none opens a Redis subscription of its own.

use std::collections::HashSet;

use async_graphql::{Context, ErrorExtensions, ID, SimpleObject, Subscription};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::ContextExt;
use super::orders::Order;
use crate::auth::Viewer;
use crate::context::AppContext;
use crate::domain::{OrderId, OrderStatus, ProductId};
use crate::error::{ApiError, RequestId};
use crate::hold::Hold;
use crate::live::{OrderChange, OrderWatch, StockStream};
use crate::orders::find_order;

/// Most products one stockChanged subscription follows.
pub const MAX_PRODUCTS: usize = 100;

#[derive(SimpleObject)]
pub struct StockUpdate {
    pub product_id: ID,
    /// Units that can be held right now.
    pub available: i64,
}

#[derive(Default)]
pub struct LiveSubscription;

#[Subscription]
impl LiveSubscription {
    /// Available units of these products (1 to 100 ids): first each product's current
    /// value, then its latest value whenever it changes, at most once per
    /// LIVE_MIN_INTERVAL per product. Needs no token.
    async fn stock_changed(
        &self,
        ctx: &Context<'_>,
        product_ids: Vec<ID>,
    ) -> async_graphql::Result<impl Stream<Item = StockUpdate> + use<>> {
        if product_ids.is_empty() || product_ids.len() > MAX_PRODUCTS {
            return Err(ctx.fail(ApiError::BadInput(format!(
                "productIds holds 1 to {MAX_PRODUCTS} ids; this one holds {}",
                product_ids.len()
            ))));
        }
        let mut ids = Vec::with_capacity(product_ids.len());
        let mut seen = HashSet::with_capacity(product_ids.len());
        for raw in &product_ids {
            let id = ProductId::parse(raw).ok_or_else(|| {
                ctx.fail(ApiError::NotFound(format!("no product has id {raw:?}")))
            })?;
            if seen.insert(id) {
                ids.push(id);
            }
        }
        let app = ctx.app();
        let rows = app.catalog.products(&ids).await.map_err(|e| ctx.fail(e))?;
        let mut watches = Vec::with_capacity(ids.len());
        for id in ids {
            let row = rows.get(&id).ok_or_else(|| {
                ctx.fail(ApiError::NotFound(format!("no product has id \"{id}\"")))
            })?;
            watches.push(app.live.watch_product(row.store, id));
        }
        Ok(
            StockStream::new(watches, std::sync::Arc::clone(app.live.pace()))
                .into_stream()
                .map(|update| StockUpdate {
                    product_id: ID(update.product.to_string()),
                    available: update.available,
                }),
        )
    }

    /// The viewer's orders as they change. With `orderId`: that order now, then again
    /// after each transition (CONFIRMED, CANCELLED, EXPIRED), for its owner or an ADMIN;
    /// an order that is unknown or someone else's is NOT_FOUND. Without it: every change
    /// to any of the viewer's orders, including orders created from now on.
    async fn order_changed(
        &self,
        ctx: &Context<'_>,
        order_id: Option<ID>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Order>> + use<>> {
        let viewer = ctx.viewer()?;
        let app = ctx.app().clone();
        let request_id = ctx.data_opt::<RequestId>().cloned();
        // Subscribed before the first read: no transition falls between the two.
        let changes = app.live.watch_orders();
        let stream = match order_id {
            Some(raw) => {
                let not_found = || ctx.fail(ApiError::NotFound("order not found".into()));
                let id = OrderId::parse(&raw).ok_or_else(not_found)?;
                let hold = find_order(&app.db, &app.engine, id)
                    .await
                    .map_err(|e| ctx.fail(e))?
                    .filter(|hold| hold.user == viewer.id || viewer.is_admin())
                    .ok_or_else(not_found)?;
                one_order(app, changes, hold, request_id).boxed()
            }
            None => orders_of(app, changes, viewer, request_id).boxed(),
        };
        Ok(stream)
    }
}

fn internal(error: anyhow::Error, request_id: Option<&RequestId>) -> async_graphql::Error {
    ApiError::Internal(error).into_graphql(request_id)
}

/// One order: its state now, then after every transition; ends once it is final.
fn one_order(
    app: AppContext,
    changes: OrderWatch,
    first: Hold,
    request_id: Option<RequestId>,
) -> impl Stream<Item = async_graphql::Result<Order>> {
    struct State {
        app: AppContext,
        changes: OrderWatch,
        next: Option<Hold>,
        sent: Option<OrderStatus>,
        id: OrderId,
        request_id: Option<RequestId>,
    }
    let state = State {
        app,
        changes,
        id: first.id,
        next: Some(first),
        sent: None,
        request_id,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(hold) = state.next.take() {
                if state.sent == Some(hold.status) {
                    continue;
                }
                state.sent = Some(hold.status);
                return Some((Ok(Order(hold)), state));
            }
            if state.sent.is_some_and(|status| status != OrderStatus::Held) {
                return None;
            }
            match state.changes.recv().await {
                Ok(change) if change.order != state.id => continue,
                // Changed, or perhaps changed while this stream fell behind: read it again.
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
            match find_order(&state.app.db, &state.app.engine, state.id).await {
                Ok(hold) => state.next = hold,
                Err(error) => {
                    let error = internal(error, state.request_id.as_ref());
                    return Some((Err(error), state));
                }
            }
        }
    })
}

/// Every change to any of the viewer's orders, as each order stands after it.
fn orders_of(
    app: AppContext,
    changes: OrderWatch,
    viewer: Viewer,
    request_id: Option<RequestId>,
) -> impl Stream<Item = async_graphql::Result<Order>> {
    let state = (app, changes, request_id, false);
    futures_util::stream::unfold(
        state,
        move |(app, mut changes, request_id, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let change: OrderChange = match changes.recv().await {
                    Ok(change) if change.user == viewer.id => change,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => {
                        // Which of the viewer's orders changed is lost with the messages: say
                        // so and end, and the client subscribes again and re-reads.
                        let error = async_graphql::Error::new(format!(
                            "this subscription fell {missed} changes behind; subscribe again"
                        ))
                        .extend_with(|_, ext| ext.set("code", "LAGGED"));
                        return Some((Err(error), (app, changes, request_id, true)));
                    }
                    Err(RecvError::Closed) => return None,
                };
                let item = match find_order(&app.db, &app.engine, change.order).await {
                    // Read after a later transition (a hold cancelled at once): the change
                    // being reported is still the hold, and the next message reports the rest.
                    Ok(Some(hold))
                        if change.status == OrderStatus::Held
                            && hold.status != OrderStatus::Held =>
                    {
                        Ok(Order(hold.as_held()))
                    }
                    Ok(Some(hold)) => Ok(Order(hold)),
                    Ok(None) => continue,
                    Err(error) => Err(internal(error, request_id.as_ref())),
                };
                return Some((item, (app, changes, request_id, false)));
            }
        },
    )
}
