//! Where changes meet subscribers inside one process. Each watched product has one
//! `watch` channel holding its latest availability: a slow subscriber only ever skips to
//! the latest value, and nothing queues up behind it. Order changes go through one
//! bounded `broadcast`; a subscriber that falls behind it learns so and reloads.
//! A product's channel lives while someone watches it and is dropped with its last
//! subscriber. Each value carries its stockChanged response, rendered once per change
//! (`Stock`), so the WebSocket layer sends the same bytes to every subscriber.
//! How often each subscriber may be sent a product's value is the hub's `Pace`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    pace: Arc<Pace>,
}

/// How often one subscriber may be sent one product's value: every LIVE_MIN_INTERVAL,
/// stretched so that all of this process's stock watches together are sent at most
/// LIVE_MAX_UPDATES_PER_SECOND updates. Each update costs a wake-up and a WebSocket frame
/// (several µs of CPU, most of it the kernel's), so without a budget 5,000 sockets on a
/// product that changes all the time would cost the service far more than the sale itself
/// (docs/LIVE.md). With the budget, more subscribers make each one's updates rarer, never
/// the process busier; more instances make them frequent again.
#[derive(Debug)]
pub struct Pace {
    min_interval: Duration,
    /// 0: no budget.
    max_updates_per_second: u32,
    /// Live `ProductWatch`es: one per subscription and product.
    watches: AtomicUsize,
}

impl Pace {
    pub fn new(min_interval: Duration, max_updates_per_second: u32) -> Self {
        Self {
            min_interval,
            max_updates_per_second,
            watches: AtomicUsize::new(0),
        }
    }

    /// The interval each watch is held to now: with n watches and a budget of b updates a
    /// second, n ÷ b seconds, and never below LIVE_MIN_INTERVAL.
    pub fn interval(&self) -> Duration {
        if self.max_updates_per_second == 0 {
            return self.min_interval;
        }
        let watches = self.watches.load(Ordering::Relaxed) as f64;
        self.min_interval.max(Duration::from_secs_f64(
            watches / f64::from(self.max_updates_per_second),
        ))
    }

    pub fn watches(&self) -> usize {
        self.watches.load(Ordering::Relaxed)
    }
}

/// Counts one watch in its hub's `Pace` while it lives.
struct Counted(Arc<Pace>);

impl Counted {
    fn new(pace: &Arc<Pace>) -> Self {
        pace.watches.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(pace))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::Relaxed);
    }
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
    _counted: Counted,
}

pub type OrderWatch = broadcast::Receiver<OrderChange>;

impl LiveHub {
    pub fn new(min_interval: Duration, max_updates_per_second: u32) -> Self {
        let (snapshots, requests) = mpsc::unbounded_channel();
        let (orders, _) = broadcast::channel(ORDER_BACKLOG);
        Self {
            inner: Arc::new(Inner {
                products: Mutex::default(),
                orders,
                snapshots,
                snapshot_requests: Mutex::new(Some(requests)),
                pace: Arc::new(Pace::new(min_interval, max_updates_per_second)),
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

    /// How often each stock watch may be sent an update.
    pub fn pace(&self) -> &Arc<Pace> {
        &self.inner.pace
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
                _counted: Counted::new(&self.inner.pace),
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
            _counted: Counted::new(&self.inner.pace),
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
        let hub = LiveHub::new(Duration::from_millis(100), 0);
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
        assert_eq!(hub.pace().watches(), 0);
    }

    #[test]
    fn the_pace_stretches_with_the_watches_beyond_the_budget() {
        let hub = LiveHub::new(Duration::from_millis(100), 100);
        let watches: Vec<_> = (0..5)
            .map(|_| hub.watch_product(StoreId(1), ProductId(1)))
            .collect();
        assert_eq!(hub.pace().watches(), 5);
        // 5 watches within 100 updates a second: LIVE_MIN_INTERVAL.
        assert_eq!(hub.pace().interval(), Duration::from_millis(100));
        let more: Vec<_> = (0..45)
            .map(|n| hub.watch_product(StoreId(1), ProductId(2 + n % 3)))
            .collect();
        // 50 watches, 100 a second: each every half second.
        assert_eq!(hub.pace().interval(), Duration::from_millis(500));
        drop(more);
        assert_eq!(hub.pace().interval(), Duration::from_millis(100));
        drop(watches);
        let unlimited = LiveHub::new(Duration::from_millis(100), 0);
        let _many: Vec<_> = (0..10_000)
            .map(|_| unlimited.watch_product(StoreId(1), ProductId(1)))
            .collect();
        assert_eq!(unlimited.pace().interval(), Duration::from_millis(100));
    }
}
