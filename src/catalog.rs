//! What lockOrder needs to know about products (store, price), held in process so the
//! hot path rarely makes a MySQL round trip. Loaded at start, and from MySQL on a miss or
//! once an entry is older than `FRESH_FOR`, so an ADMIN's change to a price reaches every
//! instance within that time. When MySQL is slow or down, the last known rows serve. What the lock script enforces (the per-customer limit,
//! pre-order capacity) is not taken from here: it lives in Redis (`lua/terms.lua`).
//! Loading a product also seeds its Redis stock and terms where Redis has none.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::db::{self, Db, catalog::ProductRow};
use crate::domain::{ProductId, StoreId};
use crate::hold::{HoldEngine, SeedProduct};

/// How long a cached product is used before MySQL is asked again.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Longest wait for a refresh of products seen before; past it (MySQL slow or down) the
/// last known rows serve, and MySQL is not asked again for FRESH_FOR.
const REFRESH_WAIT: Duration = Duration::from_millis(250);

struct Cached {
    row: Arc<ProductRow>,
    loaded: Instant,
}

pub struct Catalog {
    db: Db,
    engine: HoldEngine,
    products: RwLock<HashMap<ProductId, Cached>>,
    /// Set when a refresh failed: until then, stale rows serve without asking MySQL.
    refresh_paused_until: RwLock<Option<Instant>>,
}

impl Catalog {
    pub fn new(db: Db, engine: HoldEngine) -> Self {
        Self {
            db,
            engine,
            products: RwLock::default(),
            refresh_paused_until: RwLock::default(),
        }
    }

    /// Loads every product and seeds Redis stock for those Redis does not know yet.
    pub async fn warm(&self) -> anyhow::Result<usize> {
        let rows = db::catalog::all_products(&self.db).await?;
        let count = rows.len();
        self.remember(rows).await?;
        Ok(count)
    }

    async fn remember(&self, rows: Vec<ProductRow>) -> anyhow::Result<()> {
        let mut by_store: HashMap<StoreId, Vec<SeedProduct>> = HashMap::new();
        for row in &rows {
            by_store.entry(row.store).or_default().push(SeedProduct {
                product: row.id,
                stock: row.stock,
                max_per_customer: row.max_per_customer,
                backorder_limit: row.backorder_limit,
                backordered: row.backordered,
            });
        }
        for (store, products) in by_store {
            self.engine.init_stock(store, &products).await?;
        }
        let loaded = Instant::now();
        let mut cache = self.products.write().expect("catalog lock poisoned");
        for row in rows {
            cache.insert(
                row.id,
                Cached {
                    row: Arc::new(row),
                    loaded,
                },
            );
        }
        Ok(())
    }

    /// The known products among `ids`; unknown ids are simply absent from the map.
    pub async fn products(
        &self,
        ids: &[ProductId],
    ) -> anyhow::Result<HashMap<ProductId, Arc<ProductRow>>> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        // Entries past FRESH_FOR, kept in case MySQL cannot be asked right now.
        let mut stale = HashMap::new();
        {
            let cache = self.products.read().expect("catalog lock poisoned");
            for id in ids {
                match cache.get(id) {
                    Some(cached) if cached.loaded.elapsed() < FRESH_FOR => {
                        found.insert(*id, Arc::clone(&cached.row));
                    }
                    Some(cached) => {
                        stale.insert(*id, Arc::clone(&cached.row));
                        missing.push(*id);
                    }
                    None => missing.push(*id),
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        // The sale goes on while MySQL is away: products seen before keep their last
        // known price and name until MySQL answers again.
        let only_stale = stale.len() == missing.len();
        let paused = self
            .refresh_paused_until
            .read()
            .expect("catalog lock poisoned")
            .is_some_and(|until| Instant::now() < until);
        if only_stale && paused {
            found.extend(stale);
            return Ok(found);
        }
        let query = db::catalog::products_by_ids(&self.db, &missing);
        let rows = if only_stale {
            match tokio::time::timeout(REFRESH_WAIT, query).await {
                Ok(Ok(rows)) => rows,
                Ok(Err(error)) => return Ok(self.serve_stale(found, stale, &error)),
                Err(_) => {
                    let error = anyhow::anyhow!("no answer within {REFRESH_WAIT:?}");
                    return Ok(self.serve_stale(found, stale, &error));
                }
            }
        } else {
            query.await?
        };
        for row in &rows {
            found.insert(row.id, Arc::new(row.clone()));
        }
        self.remember(rows).await?;
        Ok(found)
    }

    fn serve_stale(
        &self,
        mut found: HashMap<ProductId, Arc<ProductRow>>,
        stale: HashMap<ProductId, Arc<ProductRow>>,
        error: &anyhow::Error,
    ) -> HashMap<ProductId, Arc<ProductRow>> {
        tracing::warn!(error = %error, "catalog refresh failed; the last known products serve");
        *self
            .refresh_paused_until
            .write()
            .expect("catalog lock poisoned") = Some(Instant::now() + FRESH_FOR);
        found.extend(stale);
        found
    }

    /// Forgets a product, so that the next lookup reads MySQL (after an ADMIN's change).
    pub fn forget(&self, id: ProductId) {
        self.products
            .write()
            .expect("catalog lock poisoned")
            .remove(&id);
    }

    /// Seeds Redis stock again for these products (Redis lost them, for example after a
    /// restart without persistence). Never overwrites what Redis has.
    pub async fn reseed(&self, ids: &[ProductId]) -> anyhow::Result<()> {
        let rows = db::catalog::products_by_ids(&self.db, ids).await?;
        self.remember(rows).await
    }
}
