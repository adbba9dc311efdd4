//! One subscriber's view of some products: the first value of each as soon as it is
//! known, then the latest value whenever it differs from the last one sent, at most once
//! per the hub's `Pace` interval per product (LIVE_MIN_INTERVAL, or longer when the
//! process's subscribers would exceed their update budget). A value held back by the
//! interval is sent when the interval ends, so the last value a subscriber sees is always
//! the latest.

use std::sync::Arc;

use futures_util::future::select_all;
use futures_util::{FutureExt, Stream};
use tokio::time::Instant;

use super::hub::{Pace, ProductWatch};
use crate::domain::ProductId;

/// A product's availability as its watch channel holds it, with the response every
/// subscriber of the standard selection gets for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    pub available: i64,
    /// `{"data":{"stockChanged":{"productId":"<id>","available":<n>}}}`: the GraphQL
    /// response to `stockChanged(...) { productId available }` for this value, exactly as
    /// async-graphql serialises it. Rendered once per change and shared, so a product
    /// followed by thousands of sockets costs one rendering per change, not one per socket
    /// (src/http/ws_stock.rs sends it).
    pub response: Arc<str>,
}

impl Stock {
    pub fn new(product: ProductId, available: i64) -> Self {
        Self {
            available,
            response: format!(
                r#"{{"data":{{"stockChanged":{{"productId":"{product}","available":{available}}}}}}}"#
            )
            .into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockUpdate {
    pub product: ProductId,
    pub available: i64,
    /// See `Stock::response`.
    pub response: Arc<str>,
}

struct Watched {
    watch: ProductWatch,
    sent: Option<i64>,
    next_at: Instant,
}

pub struct StockStream {
    products: Vec<Watched>,
    pace: Arc<Pace>,
    /// Where the next scan starts, so a busy product cannot starve the others.
    cursor: usize,
}

impl StockStream {
    pub fn new(watches: Vec<ProductWatch>, pace: Arc<Pace>) -> Self {
        let now = Instant::now();
        Self {
            products: watches
                .into_iter()
                .map(|watch| Watched {
                    watch,
                    sent: None,
                    next_at: now,
                })
                .collect(),
            pace,
            cursor: 0,
        }
    }

    /// The next update; never `None` while the products' channels live.
    pub async fn next_update(&mut self) -> Option<StockUpdate> {
        if self.products.is_empty() {
            return None;
        }
        loop {
            let now = Instant::now();
            // A product inside its interval is not listened to: whatever it changes to by
            // the interval's end is read then. Waking on every change of a busy product (a
            // sale changes it many times per interval) would cost every subscriber a
            // wake-up per change instead of one per interval.
            let mut wake_at: Option<Instant> = None;
            let count = self.products.len();
            for step in 0..count {
                let index = (self.cursor + step) % count;
                let entry = &mut self.products[index];
                if entry.next_at > now {
                    wake_at = Some(wake_at.map_or(entry.next_at, |at| at.min(entry.next_at)));
                    continue;
                }
                let latest = entry.watch.latest.borrow_and_update();
                let Some(stock) = latest.as_ref() else {
                    continue;
                };
                if entry.sent == Some(stock.available) {
                    continue;
                }
                entry.sent = Some(stock.available);
                // Read at each send: the interval follows the subscribers coming and going.
                entry.next_at = now + self.pace.interval();
                let update = StockUpdate {
                    product: entry.watch.product,
                    available: stock.available,
                    response: Arc::clone(&stock.response),
                };
                drop(latest);
                self.cursor = (index + 1) % count;
                return Some(update);
            }
            let listening: Vec<_> = self
                .products
                .iter_mut()
                .filter(|entry| entry.next_at <= now)
                .map(|entry| entry.watch.latest.changed().boxed())
                .collect();
            let closed = match (!listening.is_empty(), wake_at) {
                (false, Some(at)) => {
                    tokio::time::sleep_until(at).await;
                    false
                }
                (false, None) => return None,
                (true, Some(at)) => tokio::select! {
                    (result, _, _) = select_all(listening) => result.is_err(),
                    () = tokio::time::sleep_until(at) => false,
                },
                (true, None) => select_all(listening).await.0.is_err(),
            };
            if closed {
                return None;
            }
        }
    }

    pub fn into_stream(self) -> impl Stream<Item = StockUpdate> + Send {
        futures_util::stream::unfold(self, |mut stream| async move {
            stream.next_update().await.map(|update| (update, stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::StoreId;
    use crate::live::{Change, LiveHub};

    fn stock(product: u64, available: i64) -> Change {
        Change {
            order: None,
            stock: vec![(ProductId(product), available)],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn changes_are_coalesced_and_the_latest_is_always_sent_last() {
        let hub = LiveHub::new(Duration::from_millis(100), 0);
        let mut stream = StockStream::new(
            vec![hub.watch_product(StoreId(1), ProductId(1))],
            Arc::clone(hub.pace()),
        );
        hub.apply(stock(1, 10));
        let first = stream.next_update().await.unwrap();
        assert_eq!(first.available, 10);
        let started = Instant::now();
        for available in (5..10).rev() {
            hub.apply(stock(1, available));
        }
        let next = stream.next_update().await.unwrap();
        assert_eq!(next.available, 5, "only the latest of a burst");
        assert!(started.elapsed() >= Duration::from_millis(100));
        hub.apply(stock(1, 4));
        hub.apply(stock(1, 5));
        // 4 then back to 5 within one interval: nothing new to say.
        let quiet = tokio::time::timeout(Duration::from_secs(1), stream.next_update()).await;
        assert!(quiet.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn each_product_has_its_own_interval() {
        let hub = LiveHub::new(Duration::from_millis(100), 0);
        let mut stream = StockStream::new(
            vec![
                hub.watch_product(StoreId(1), ProductId(1)),
                hub.watch_product(StoreId(1), ProductId(2)),
            ],
            Arc::clone(hub.pace()),
        );
        hub.apply(stock(1, 3));
        hub.apply(stock(2, 8));
        let mut seen = [
            stream.next_update().await.unwrap(),
            stream.next_update().await.unwrap(),
        ];
        seen.sort_by_key(|u| u.product);
        assert_eq!(seen[0].available, 3);
        assert_eq!(seen[1].available, 8);
    }
}
