//! updateProduct: an ADMIN changes a product's terms. MySQL is the record (the row and
//! one `product_changes` row per changed field); Redis is what the lock script enforces.
//! The MySQL row stays locked while Redis changes, so two changes of one product never
//! interleave, and a change Redis refuses leaves MySQL untouched.

use crate::auth::Viewer;
use crate::context::AppContext;
use crate::db::catalog::{self, ProductChange, ProductRow};
use crate::domain::ProductId;
use crate::hold::{TermsChange, TermsOutcome};
use crate::orders::{OrderError, OrderErrorCode};

/// `None` when there is no such product; `Some(Err)` when the change is refused.
pub async fn update_product(
    app: &AppContext,
    admin: Viewer,
    id: ProductId,
    change: &ProductChange,
) -> anyhow::Result<Option<Result<ProductRow, OrderError>>> {
    let Some(mut locked) = catalog::begin_update(&app.db, id).await? else {
        return Ok(None);
    };
    if let Some(name) = &change.name
        && catalog::name_taken(&mut locked, name).await?
    {
        return Ok(Some(Err(OrderError::new(
            OrderErrorCode::NameTaken,
            "this store already has a product with that name",
        )
        .with_field("name"))));
    }
    let terms = TermsChange {
        max_per_customer: change.max_per_customer,
        backorder_limit: change.backorder_limit,
    };
    if terms.max_per_customer.is_some() || terms.backorder_limit.is_some() {
        let store = locked.before.store;
        let mut outcome = app.engine.set_terms(store, id, terms).await?;
        if outcome == TermsOutcome::Uninitialised {
            app.catalog.reseed(&[id]).await?;
            outcome = app.engine.set_terms(store, id, terms).await?;
        }
        match outcome {
            TermsOutcome::Updated => {}
            TermsOutcome::BelowBackordered(units) => {
                return Ok(Some(Err(OrderError::new(
                    OrderErrorCode::BackorderLimitTooLow,
                    format!(
                        "{units} units are pre-ordered already; the backorder limit cannot be lower"
                    ),
                )
                .with_field("backorderLimit")
                .with_product(id)
                .with_available(units))));
            }
            TermsOutcome::Uninitialised => {
                anyhow::bail!("product {id} has no Redis terms even after seeding")
            }
        }
    }
    let row = catalog::finish_update(locked, admin.id, change).await?;
    app.catalog.forget(id);
    Ok(Some(Ok(row)))
}
