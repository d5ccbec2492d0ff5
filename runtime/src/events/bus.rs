//! A fan-out of events to any number of subscribers that never blocks the
//! publisher.
//!
//! Each subscriber owns a bounded buffer. Publishing never waits: an event
//! that does not fit in a subscriber's buffer drops that subscriber (it has
//! fallen behind and can no longer see a gap-free history), which is told so
//! when it has read what was buffered. Everyone else carries on. Events are
//! built and delivered under one lock, so every subscriber sees them in the
//! same order, and each event's content is at least as new as the previous
//! one's.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::mpsc;

/// One subscriber as the bus holds it.
struct Subscriber<T> {
    id: u64,
    tx: mpsc::Sender<T>,
    /// Raised when the bus dropped this subscriber for falling behind.
    overflowed: Arc<AtomicBool>,
}

type Subscribers<T> = Mutex<Vec<Subscriber<T>>>;

/// What one [`EventBus::publish_with`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Delivery {
    /// Subscribers that got the event.
    pub delivered: usize,
    /// Subscribers dropped because their buffer was full.
    pub dropped: usize,
}

/// The fan-out.
pub struct EventBus<T> {
    subscribers: Arc<Subscribers<T>>,
    next_id: AtomicU64,
    capacity: usize,
}

impl<T: Clone> EventBus<T> {
    /// A bus whose subscribers may each fall `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        EventBus {
            subscribers: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(1),
            capacity: capacity.max(1),
        }
    }

    /// A new subscriber; it sees every event published from now on.
    pub fn subscribe(&self) -> Subscription<T> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let overflowed = Arc::new(AtomicBool::new(false));
        self.subscribers.lock().push(Subscriber {
            id,
            tx,
            overflowed: overflowed.clone(),
        });
        Subscription {
            id,
            rx,
            overflowed,
            reported: false,
            bus: Arc::downgrade(&self.subscribers),
        }
    }

    /// Ends every subscription (after what is buffered): berthd is shutting
    /// down, and an open stream would hold the gRPC server's graceful stop.
    pub fn close_all(&self) {
        self.subscribers.lock().clear();
    }

    /// How many subscribers are attached.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().len()
    }

    /// Builds an event with `make` and hands it to every subscriber, without
    /// waiting. `make` runs under the bus lock (so content and delivery
    /// order agree) and not at all when nobody listens; it must not publish.
    pub fn publish_with(&self, make: impl FnOnce() -> Option<T>) -> Delivery {
        let mut subs = self.subscribers.lock();
        if subs.is_empty() {
            return Delivery::default();
        }
        let Some(event) = make() else {
            return Delivery::default();
        };
        let mut d = Delivery::default();
        subs.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => {
                d.delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                s.overflowed.store(true, Ordering::Relaxed);
                tracing::warn!(
                    subscriber = s.id,
                    buffered = self.capacity,
                    "event subscriber fell behind and was dropped (it must resubscribe and relist)"
                );
                d.dropped += 1;
                false
            }
            // The subscriber went away between its last read and now.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        d
    }
}

/// Why a subscription ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber fell more than {0} events behind and was dropped")]
pub struct Overflowed(pub usize);

/// One subscriber's end: a stream of events, then (if it was dropped for
/// falling behind) one `Err(Overflowed)`. Dropping it unsubscribes.
pub struct Subscription<T> {
    id: u64,
    rx: mpsc::Receiver<T>,
    overflowed: Arc<AtomicBool>,
    reported: bool,
    bus: Weak<Subscribers<T>>,
}

impl<T> Subscription<T> {
    /// This subscriber's id (as logged).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next event; `None` once the bus is gone or the error was given.
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Result<T, Overflowed>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, Overflowed>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(e)) => Poll::Ready(Some(Ok(e))),
            Poll::Ready(None) if self.overflowed.load(Ordering::Relaxed) && !self.reported => {
                self.reported = true;
                Poll::Ready(Some(Err(Overflowed(self.rx.max_capacity()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> tokio_stream::Stream for Subscription<T> {
    type Item = Result<T, Overflowed>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if let Some(subs) = self.bus.upgrade() {
            subs.lock().retain(|s| s.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(bus: &EventBus<u32>, v: u32) -> Delivery {
        bus.publish_with(|| Some(v))
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event_in_order() {
        let bus = EventBus::new(16);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        for v in 0..10 {
            assert_eq!(
                publish(&bus, v),
                Delivery {
                    delivered: 2,
                    dropped: 0
                }
            );
        }
        for s in [&mut a, &mut b] {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.push(s.recv().await.unwrap().unwrap());
            }
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn late_subscribers_see_only_later_events() {
        let bus = EventBus::new(4);
        assert_eq!(publish(&bus, 1).delivered, 0);
        let mut s = bus.subscribe();
        let _ = publish(&bus, 2);
        assert_eq!(s.recv().await, Some(Ok(2)));
    }

    #[test]
    fn nothing_is_built_without_subscribers() {
        let bus = EventBus::<u32>::new(4);
        let mut built = false;
        let _ = bus.publish_with(|| {
            built = true;
            Some(1)
        });
        assert!(!built);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_told_while_others_continue() {
        let bus = EventBus::new(3);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        let mut fast_got = Vec::new();
        let mut dropped = 0;
        for v in 0..10 {
            // Publishing never waits, whatever the slow one does.
            let d = publish(&bus, v);
            dropped += d.dropped;
            fast_got.push(fast.recv().await.unwrap().unwrap());
        }
        assert_eq!(dropped, 1, "dropped exactly once");
        assert_eq!(fast_got, (0..10).collect::<Vec<_>>());
        assert_eq!(bus.subscriber_count(), 1);
        // The slow one reads what fitted, then learns it was dropped, then ends.
        let mut slow_got = Vec::new();
        while let Some(e) = slow.recv().await {
            slow_got.push(e);
        }
        assert_eq!(slow_got, vec![Ok(0), Ok(1), Ok(2), Err(Overflowed(3))]);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unsubscribes() {
        let bus = EventBus::<u32>::new(2);
        let a = bus.subscribe();
        let _b = bus.subscribe();
        assert_eq!(bus.subscriber_count(), 2);
        drop(a);
        assert_eq!(bus.subscriber_count(), 1);
        assert_eq!(publish(&bus, 7).delivered, 1);
    }

    #[tokio::test]
    async fn close_all_ends_every_stream_after_its_buffer() {
        let bus = EventBus::<u32>::new(4);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        let _ = publish(&bus, 1);
        bus.close_all();
        assert_eq!(bus.subscriber_count(), 0);
        for s in [&mut a, &mut b] {
            assert_eq!(s.recv().await, Some(Ok(1)));
            assert_eq!(s.recv().await, None, "ends without an overflow error");
        }
    }

    #[tokio::test]
    async fn subscription_ends_cleanly_when_the_bus_goes() {
        let bus = EventBus::<u32>::new(2);
        let mut s = bus.subscribe();
        let _ = publish(&bus, 5);
        drop(bus);
        assert_eq!(s.recv().await, Some(Ok(5)));
        assert_eq!(s.recv().await, None);
    }
}
