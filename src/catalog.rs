//! What lockOrder needs to know about products (store, price, per-customer limit), held
//! in process so the hot path makes no MySQL round trip. Loaded at start, and from MySQL
//! on a miss; loading a product also seeds its Redis stock where Redis has none.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::db::{self, Db, catalog::ProductRow};
use crate::domain::{ProductId, StoreId};
use crate::hold::HoldEngine;

pub struct Catalog {
    db: Db,
    engine: HoldEngine,
    products: RwLock<HashMap<ProductId, Arc<ProductRow>>>,
}

impl Catalog {
    pub fn new(db: Db, engine: HoldEngine) -> Self {
        Self {
            db,
            engine,
            products: RwLock::default(),
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
        let mut by_store: HashMap<StoreId, Vec<(ProductId, i64)>> = HashMap::new();
        for row in &rows {
            by_store
                .entry(row.store)
                .or_default()
                .push((row.id, row.stock));
        }
        for (store, products) in by_store {
            self.engine.init_stock(store, &products).await?;
        }
        let mut cache = self.products.write().expect("catalog lock poisoned");
        for row in rows {
            cache.insert(row.id, Arc::new(row));
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
        {
            let cache = self.products.read().expect("catalog lock poisoned");
            for id in ids {
                match cache.get(id) {
                    Some(row) => {
                        found.insert(*id, Arc::clone(row));
                    }
                    None => missing.push(*id),
                }
            }
        }
        if !missing.is_empty() {
            let rows = db::catalog::products_by_ids(&self.db, &missing).await?;
            for row in &rows {
                found.insert(row.id, Arc::new(row.clone()));
            }
            self.remember(rows).await?;
        }
        Ok(found)
    }

    /// Seeds Redis stock again for these products (Redis lost them, for example after a
    /// restart without persistence). Never overwrites what Redis has.
    pub async fn reseed(&self, ids: &[ProductId]) -> anyhow::Result<()> {
        let rows = db::catalog::products_by_ids(&self.db, ids).await?;
        self.remember(rows).await
    }
}
