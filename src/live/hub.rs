//! Where changes meet subscribers inside one process. Each watched product has one
//! `watch` channel holding its latest availability: a slow subscriber only ever skips to
//! the latest value, and nothing queues up behind it. Order changes go through one
//! bounded `broadcast`; a subscriber that falls behind it learns so and reloads.
//! A product's channel lives while someone watches it and is dropped with its last
//! subscriber. Each value carries its stockChanged response, rendered once per change
//! (`Stock`), so the WebSocket layer sends the same bytes to every subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::message::{Change, OrderChange};
use super::stock::Stock;
use crate::domain::{ProductId, StoreId};

/// Order changes a subscriber may fall behind by before it must reload.
const ORDER_BACKLOG: usize = 4096;

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

struct Inner {
    products: Mutex<HashMap<ProductId, Weak<ProductFeed>>>,
    orders: broadcast::Sender<OrderChange>,
    /// Products whose current value the feed should publish (see `lua/live_snapshot.lua`).
    snapshots: mpsc::UnboundedSender<(StoreId, ProductId)>,
    /// Their receiving end, until the feed takes it.
    snapshot_requests: Mutex<Option<SnapshotRequests>>,
    min_interval: Duration,
}

pub(super) type SnapshotRequests = mpsc::UnboundedReceiver<(StoreId, ProductId)>;

/// One product's channel; shared by every subscriber of the product.
pub(super) struct ProductFeed {
    product: ProductId,
    /// `None` until the first value (the snapshot) arrives.
    latest: watch::Sender<Option<Stock>>,
    hub: Weak<Inner>,
}

impl Drop for ProductFeed {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let mut products = hub.products.lock().expect("live hub lock poisoned");
            // A new feed for the product may have replaced this one already.
            if products
                .get(&self.product)
                .is_some_and(|feed| feed.strong_count() == 0)
            {
                products.remove(&self.product);
            }
        }
    }
}

/// A subscriber's handle on one product: keeps the channel alive while held.
pub struct ProductWatch {
    pub product: ProductId,
    pub latest: watch::Receiver<Option<Stock>>,
    _feed: Arc<ProductFeed>,
}

pub type OrderWatch = broadcast::Receiver<OrderChange>;

impl LiveHub {
    pub fn new(min_interval: Duration) -> Self {
        let (snapshots, requests) = mpsc::unbounded_channel();
        let (orders, _) = broadcast::channel(ORDER_BACKLOG);
        Self {
            inner: Arc::new(Inner {
                products: Mutex::default(),
                orders,
                snapshots,
                snapshot_requests: Mutex::new(Some(requests)),
                min_interval,
            }),
        }
    }

    /// The snapshot requests, for the one feed of this hub; `None` once taken.
    pub(super) fn take_snapshot_requests(&self) -> Option<SnapshotRequests> {
        self.inner
            .snapshot_requests
            .lock()
            .expect("live hub lock poisoned")
            .take()
    }

    /// Coalescing interval of stock updates per product (LIVE_MIN_INTERVAL).
    pub fn min_interval(&self) -> Duration {
        self.inner.min_interval
    }

    /// Watches a product of `store`. The first watcher of a product asks the feed for a
    /// snapshot, so the channel gets its current value in order with every change.
    pub fn watch_product(&self, store: StoreId, product: ProductId) -> ProductWatch {
        let mut products = self.inner.products.lock().expect("live hub lock poisoned");
        if let Some(feed) = products.get(&product).and_then(Weak::upgrade) {
            return ProductWatch {
                product,
                latest: feed.latest.subscribe(),
                _feed: feed,
            };
        }
        let (latest, receiver) = watch::channel(None);
        let feed = Arc::new(ProductFeed {
            product,
            latest,
            hub: Arc::downgrade(&self.inner),
        });
        products.insert(product, Arc::downgrade(&feed));
        // Unbounded but one entry per newly watched product; the feed drains it.
        let _ = self.inner.snapshots.send((store, product));
        ProductWatch {
            product,
            latest: receiver,
            _feed: feed,
        }
    }

    pub fn watch_orders(&self) -> OrderWatch {
        self.inner.orders.subscribe()
    }

    /// Products someone watches now: what the feed re-reads after a reconnect.
    pub fn watched(&self) -> Vec<ProductId> {
        let products = self.inner.products.lock().expect("live hub lock poisoned");
        products
            .iter()
            .filter(|(_, feed)| feed.strong_count() > 0)
            .map(|(product, _)| *product)
            .collect()
    }

    /// Hands one published change to its watchers.
    pub fn apply(&self, change: Change) {
        if !change.stock.is_empty() {
            let products = self.inner.products.lock().expect("live hub lock poisoned");
            for (product, available) in &change.stock {
                if let Some(feed) = products.get(product).and_then(Weak::upgrade) {
                    feed.latest.send_if_modified(|latest| {
                        if latest.as_ref().is_some_and(|l| l.available == *available) {
                            return false;
                        }
                        *latest = Some(Stock::new(*product, *available));
                        true
                    });
                }
            }
        }
        if let Some(order) = change.order {
            // No receivers is fine: nobody follows orders right now.
            let _ = self.inner.orders.send(order);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_product_channel_lives_as_long_as_its_watchers() {
        let hub = LiveHub::new(Duration::from_millis(100));
        let mut requests = hub.take_snapshot_requests().unwrap();
        let first = hub.watch_product(StoreId(1), ProductId(5));
        let second = hub.watch_product(StoreId(1), ProductId(5));
        assert_eq!(requests.try_recv().ok(), Some((StoreId(1), ProductId(5))));
        assert!(requests.try_recv().is_err(), "one snapshot per new channel");
        hub.apply(Change {
            order: None,
            stock: vec![(ProductId(5), 7), (ProductId(6), 1)],
        });
        assert_eq!(
            second.latest.borrow().as_ref().map(|s| s.available),
            Some(7)
        );
        drop(first);
        assert_eq!(hub.watched(), [ProductId(5)]);
        drop(second);
        assert!(hub.watched().is_empty());
    }
}
