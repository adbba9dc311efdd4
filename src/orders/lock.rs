//! lockOrder: from a list of lines to one atomic hold, or to the reasons there is none.

use std::collections::BTreeMap;

use crate::catalog::Catalog;
use crate::domain::{IdempotencyKey, OrderId, ProductId, StoreId};
use crate::hold::{Hold, HoldEngine, LockOutcome, LockRequest, RequestedLine};

use super::errors::{OrderAnswer, OrderError, OrderErrorCode};
use super::transitions::find_order;
use crate::auth::Viewer;
use crate::db::Db;

/// A line as the client sent it, before any check.
#[derive(Debug, Clone)]
pub struct LineInput {
    pub product_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct LockLimits {
    pub max_line_quantity: u32,
    pub max_order_lines: usize,
}

/// Checks the shape of the order: quantities in range, duplicate lines summed, ids that
/// can be ours. Returns the distinct products with their summed quantities.
fn parse_lines(
    lines: &[LineInput],
    limits: LockLimits,
) -> Result<BTreeMap<ProductId, u32>, Vec<OrderError>> {
    if lines.is_empty() {
        return Err(vec![
            OrderError::new(
                OrderErrorCode::EmptyOrder,
                "an order needs at least one line",
            )
            .with_field("items"),
        ]);
    }
    let max = i64::from(limits.max_line_quantity);
    let mut errors = Vec::new();
    let mut summed: BTreeMap<ProductId, i64> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(product) = ProductId::parse(&line.product_id) else {
            errors.push(
                OrderError::new(OrderErrorCode::ProductNotFound, "no product has this id")
                    .with_field(format!("items.{index}.productId")),
            );
            continue;
        };
        if !(1..=max).contains(&line.quantity) {
            errors.push(
                OrderError::new(
                    OrderErrorCode::InvalidQuantity,
                    format!("quantity must be between 1 and {max}"),
                )
                .with_field(format!("items.{index}.quantity"))
                .with_product(product),
            );
            continue;
        }
        *summed.entry(product).or_default() += line.quantity;
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if summed.len() > limits.max_order_lines {
        return Err(vec![
            OrderError::new(
                OrderErrorCode::TooManyLines,
                format!(
                    "an order may have at most {} distinct products",
                    limits.max_order_lines
                ),
            )
            .with_field("items"),
        ]);
    }
    let over: Vec<OrderError> = summed
        .iter()
        .filter(|(_, quantity)| **quantity > max)
        .map(|(product, _)| {
            OrderError::new(
                OrderErrorCode::InvalidQuantity,
                format!("quantity must be between 1 and {max}"),
            )
            .with_field("items")
            .with_product(*product)
        })
        .collect();
    if !over.is_empty() {
        return Err(over);
    }
    Ok(summed
        .into_iter()
        .map(|(product, quantity)| (product, quantity as u32))
        .collect())
}

pub struct LockContext<'a> {
    pub db: &'a Db,
    pub engine: &'a HoldEngine,
    pub catalog: &'a Catalog,
    pub limits: LockLimits,
}

/// How a lockOrder ended, before it becomes a payload.
enum Locked {
    New(Hold),
    /// The hold the idempotency key already names.
    Existing(Hold),
    Refused(Vec<OrderError>),
}

/// Holds every line or none. `Ok` carries the hold (new, or the one the idempotency
/// key already names); `Err` the business errors, with nothing changed. Each call is
/// counted by outcome (`flashstock_lock_orders_total`).
pub async fn lock_order(
    cx: LockContext<'_>,
    viewer: Viewer,
    lines: &[LineInput],
    idempotency_key: Option<IdempotencyKey>,
    allow_backorder: bool,
) -> anyhow::Result<OrderAnswer> {
    let locked = lock(cx, viewer, lines, idempotency_key, allow_backorder).await;
    crate::metrics::lock_order(match &locked {
        Ok((Locked::New(_), _)) => "held",
        Ok((Locked::Existing(_), _)) => "existing",
        Ok((Locked::Refused(errors), _)) => errors
            .first()
            .map_or("refused", |error| error.code.snake_case()),
        Err(_) => "internal_server_error",
    });
    Ok(match locked? {
        (Locked::New(hold) | Locked::Existing(hold), replicated) => {
            OrderAnswer::order(hold, replicated)
        }
        (Locked::Refused(errors), _) => OrderAnswer::refused(errors),
    })
}

async fn lock(
    cx: LockContext<'_>,
    viewer: Viewer,
    lines: &[LineInput],
    idempotency_key: Option<IdempotencyKey>,
    allow_backorder: bool,
) -> anyhow::Result<(Locked, bool)> {
    let quantities = match parse_lines(lines, cx.limits) {
        Ok(quantities) => quantities,
        Err(errors) => return Ok((Locked::Refused(errors), true)),
    };
    let ids: Vec<ProductId> = quantities.keys().copied().collect();
    let products = cx.catalog.products(&ids).await?;
    let unknown: Vec<OrderError> = ids
        .iter()
        .filter(|id| !products.contains_key(id))
        .map(|id| {
            OrderError::new(OrderErrorCode::ProductNotFound, "no product has this id")
                .with_product(*id)
        })
        .collect();
    if !unknown.is_empty() {
        return Ok((Locked::Refused(unknown), true));
    }
    let stores: std::collections::BTreeSet<StoreId> = products.values().map(|p| p.store).collect();
    let store = match stores.into_iter().collect::<Vec<_>>().as_slice() {
        [store] => *store,
        _ => {
            return Ok((
                Locked::Refused(vec![
                    OrderError::new(
                        OrderErrorCode::MixedStores,
                        "products must be from the same store",
                    )
                    .with_field("items"),
                ]),
                true,
            ));
        }
    };
    if cx.engine.is_recovering(store) {
        return Ok((Locked::Refused(vec![OrderError::store_recovering()]), true));
    }
    let request = LockRequest {
        order: OrderId::new(store),
        user: viewer.id,
        lines: quantities
            .iter()
            .map(|(id, quantity)| {
                let product = &products[id];
                RequestedLine {
                    product: *id,
                    quantity: *quantity,
                    unit_price_cents: product.price_cents,
                }
            })
            .collect(),
        idempotency_key,
        allow_backorder,
    };

    let mut answer = cx.engine.lock(&request).await?;
    if let LockOutcome::Uninitialised(missing) = &answer.outcome {
        // Redis lost these products' stock. If it lost writes MySQL has (a restart
        // without persistence), the whole store is rebuilt from MySQL; a product merely
        // new to Redis is seeded from MySQL, never over live values. Then once more.
        if crate::recovery::ensure_current(cx.db, cx.engine, store, false)
            .await?
            .is_none()
        {
            cx.catalog.reseed(missing).await?;
        }
        answer = cx.engine.lock(&request).await?;
    }
    let locked = match answer.outcome {
        LockOutcome::Held {
            created_at,
            held_until,
            backordered,
        } => Locked::New(Hold {
            id: request.order,
            user: viewer.id,
            status: crate::domain::OrderStatus::Held,
            total_cents: request
                .lines
                .iter()
                .map(|l| i64::from(l.quantity) * l.unit_price_cents)
                .sum(),
            lines: request
                .lines
                .iter()
                .map(|l| crate::hold::HoldLine {
                    product: l.product,
                    quantity: l.quantity,
                    unit_price_cents: l.unit_price_cents,
                    backordered: backordered.get(&l.product).copied().unwrap_or(0),
                })
                .collect(),
            created_at,
            held_until,
            confirmed_at: None,
            finished_at: None,
            payment_reference: None,
            confirmed_by: None,
            idempotency_key: request.idempotency_key,
            version: 1,
            from_waitlist: false,
        }),
        LockOutcome::Existing(order) => match find_order(cx.db, cx.engine, order).await? {
            Some(hold) => Locked::Existing(hold),
            None => anyhow::bail!("idempotency key names order {order}, which cannot be found"),
        },
        LockOutcome::KeyReused(order) => Locked::Refused(vec![
            OrderError::new(
                OrderErrorCode::IdempotencyKeyReused,
                "this idempotency key already names an order made from other lines; use a new key for a new order",
            )
            .with_field("idempotencyKey")
            .with_order(order),
        ]),
        LockOutcome::TooManyHolds(cap) => Locked::Refused(vec![OrderError::new(
            OrderErrorCode::TooManyHolds,
            format!("a customer may hold at most {cap} unpaid orders in a store at once; pay for or cancel one first"),
        )]),
        LockOutcome::Short(lines) => Locked::Refused(
            lines
                .into_iter()
                .map(|(product, available)| {
                    OrderError::new(
                        OrderErrorCode::InsufficientStock,
                        "not enough stock for this product",
                    )
                    .with_product(product)
                    .with_available(available)
                })
                .collect(),
        ),
        LockOutcome::LimitExceeded(lines) => Locked::Refused(
            lines
                .into_iter()
                .map(|(product, allowed)| {
                    OrderError::new(
                        OrderErrorCode::LimitExceeded,
                        format!("the per-customer limit allows {allowed} more of this product"),
                    )
                    .with_product(product)
                    .with_available(allowed)
                })
                .collect(),
        ),
        LockOutcome::Uninitialised(missing) => {
            anyhow::bail!("stock of {missing:?} is missing in Redis even after seeding")
        }
    };
    Ok((locked, answer.replicated))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LockLimits = LockLimits {
        max_line_quantity: 1000,
        max_order_lines: 2,
    };

    fn line(product: &str, quantity: i64) -> LineInput {
        LineInput {
            product_id: product.to_owned(),
            quantity,
        }
    }

    fn codes(result: Result<BTreeMap<ProductId, u32>, Vec<OrderError>>) -> Vec<OrderErrorCode> {
        result.unwrap_err().into_iter().map(|e| e.code).collect()
    }

    #[test]
    fn duplicate_lines_are_summed() {
        let parsed = parse_lines(&[line("1", 2), line("2", 1), line("1", 3)], LIMITS).unwrap();
        assert_eq!(
            parsed.into_iter().collect::<Vec<_>>(),
            vec![(ProductId(1), 5), (ProductId(2), 1)]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            codes(parse_lines(&[], LIMITS)),
            vec![OrderErrorCode::EmptyOrder]
        );
        assert_eq!(
            codes(parse_lines(
                &[line("1", 0), line("abc", 1), line("2", -1)],
                LIMITS
            )),
            vec![
                OrderErrorCode::InvalidQuantity,
                OrderErrorCode::ProductNotFound,
                OrderErrorCode::InvalidQuantity
            ]
        );
        assert_eq!(
            codes(parse_lines(&[line("1", 600), line("1", 600)], LIMITS)),
            vec![OrderErrorCode::InvalidQuantity]
        );
        assert_eq!(
            codes(parse_lines(
                &[line("1", 1), line("2", 1), line("3", 1)],
                LIMITS
            )),
            vec![OrderErrorCode::TooManyLines]
        );
    }
}
