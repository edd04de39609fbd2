//! The minimum transfer rate: a transfer that moves fewer than
//! [`ClientConfig::min_rate_bytes_per_sec`] bytes a second, measured over
//! the last [`ClientConfig::min_rate_window`], is given up on.
//!
//! The read timeout only catches a transfer that stops completely; a
//! registry that dribbles a byte now and then keeps it alive forever. The
//! rate is measured over a **sliding window**: the meter keeps samples of
//! the running byte count at least a sixteenth of the window apart, and
//! compares the bytes moved since the newest sample that is at least one
//! window old with what the minimum rate asks for over that span. So the
//! verdict is about the last window (give or take a sixteenth), not about
//! the average since the start, and a burst followed by silence fails one
//! window after the burst.
//!
//! - No verdict is given before one full window has passed since the
//!   transfer started, so a transfer that finishes within the window is
//!   never stalled, whatever its size.
//! - Downloads (manifests, blobs) are measured from the response headers
//!   on; the time to get them is bounded by the connect and read
//!   timeouts. Uploads are measured from the first body byte handed to
//!   the connection until the last; waiting for the registry's answer
//!   after that is again the read timeout's business.
//! - A minimum of 0 (or a zero window) turns the check off.
//!
//! A stall is reported as [`Error::TransferStalled`](crate::Error), which
//! names the registry, the repository, the blob (or manifest) and the
//! measured rate. Nothing resumes a broken transfer (a retry starts over),
//! so a stalled blob is retried at most once, on a new request, whatever
//! [`ClientConfig::max_retries`] says: a registry that stalls costs at most
//! about two windows per pull or push, not many minutes.
//!
//! [`ClientConfig::min_rate_bytes_per_sec`]: crate::ClientConfig::min_rate_bytes_per_sec
//! [`ClientConfig::min_rate_window`]: crate::ClientConfig::min_rate_window
//! [`ClientConfig::max_retries`]: crate::ClientConfig::max_retries

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::client::ClientConfig;

/// How often a stalled blob is retried, at most (and never more than the
/// configured retries).
pub(crate) const MAX_STALL_RETRIES: u32 = 1;

/// What the meter measured when it gave up: `bytes` over `elapsed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stall {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Stall {
    /// The measured rate in bytes a second, rounded down.
    pub(crate) fn rate(&self) -> u64 {
        let ms = self.elapsed.as_millis().max(1);
        u64::try_from(u128::from(self.bytes) * 1000 / ms).unwrap_or(u64::MAX)
    }
}

/// A sliding-window rate meter (see the module documentation).
#[derive(Debug)]
pub(crate) struct RateMeter {
    min_rate: u64,
    window: Duration,
    /// Bytes so far.
    total: u64,
    /// (time, `total` then), oldest first; the first is the baseline.
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// A meter starting at `now`; `None` when the check is off.
    pub(crate) fn new(min_rate: u64, window: Duration, now: Instant) -> Option<RateMeter> {
        if min_rate == 0 || window.is_zero() {
            return None;
        }
        Some(RateMeter {
            min_rate,
            window,
            total: 0,
            samples: VecDeque::from([(now, 0)]),
        })
    }

    /// A meter with `config`'s minimum, starting now.
    pub(crate) fn from_config(config: &ClientConfig) -> Option<RateMeter> {
        RateMeter::new(
            config.min_rate_bytes_per_sec,
            config.min_rate_window,
            Instant::now(),
        )
    }

    /// The spacing of samples, and of checks when nothing arrives.
    pub(crate) fn granularity(&self) -> Duration {
        (self.window / 16).max(Duration::from_millis(10))
    }

    /// Counts `n` bytes moved at `now`.
    pub(crate) fn record(&mut self, n: u64, now: Instant) {
        self.total = self.total.saturating_add(n);
        let last = self.samples.back().map(|(t, _)| *t);
        if last.is_none_or(|t| now.saturating_duration_since(t) >= self.granularity()) {
            self.samples.push_back((now, self.total));
        }
    }

    /// `Some` when the rate over the last window is below the minimum.
    pub(crate) fn check(&mut self, now: Instant) -> Option<Stall> {
        let horizon = now.checked_sub(self.window)?;
        // Keep as baseline the newest sample at least one window old.
        while self.samples.len() > 1 && self.samples[1].0 <= horizon {
            self.samples.pop_front();
        }
        let &(since, at) = self.samples.front()?;
        if since > horizon {
            return None; // less than a window measured yet
        }
        let elapsed = now.saturating_duration_since(since);
        let bytes = self.total - at;
        let wanted = u128::from(self.min_rate) * elapsed.as_millis() / 1000;
        (u128::from(bytes) < wanted).then_some(Stall { bytes, elapsed })
    }
}

/// A [`RateMeter`] with a timer, for a loop over a body's chunks.
pub(crate) struct Watchdog {
    meter: RateMeter,
    timer: Pin<Box<Sleep>>,
}

impl Watchdog {
    /// A watchdog with `config`'s minimum, starting now; `None` when the
    /// check is off.
    pub(crate) fn new(config: &ClientConfig) -> Option<Watchdog> {
        let meter = RateMeter::from_config(config)?;
        let timer = Box::pin(tokio::time::sleep(meter.granularity()));
        Some(Watchdog { meter, timer })
    }

    /// Counts `n` bytes moved now; `Err` if the rate has fallen below the
    /// minimum.
    pub(crate) fn record(&mut self, n: u64) -> Result<(), Stall> {
        let now = Instant::now();
        self.meter.record(n, now);
        match self.meter.check(now) {
            Some(stall) => Err(stall),
            None => Ok(()),
        }
    }

    /// Waits for the timer's next tick (then checks the rate).
    pub(crate) async fn tick(&mut self) -> Result<(), Stall> {
        (&mut self.timer).await;
        let now = Instant::now();
        self.timer.as_mut().reset(now + self.meter.granularity());
        match self.meter.check(now) {
            Some(stall) => Err(stall),
            None => Ok(()),
        }
    }
}

/// A [`RateMeter`] for an upload, fed with the running count of body bytes
/// handed to the connection, polled by the caller's timer. It starts at
/// the first byte, starts over when the count goes back (the request was
/// sent again), and stops judging once the whole body is out.
pub(crate) struct UploadMeter {
    min_rate: u64,
    window: Duration,
    meter: Option<RateMeter>,
    seen: u64,
}

impl UploadMeter {
    pub(crate) fn new(config: &ClientConfig) -> UploadMeter {
        UploadMeter {
            min_rate: config.min_rate_bytes_per_sec,
            window: config.min_rate_window,
            meter: None,
            seen: 0,
        }
    }

    /// `sent` of `total` bytes are out now: `Some` when the rate has
    /// fallen below the minimum.
    pub(crate) fn observe(&mut self, sent: u64, total: u64) -> Option<Stall> {
        let now = Instant::now();
        if sent < self.seen {
            self.meter = None;
            self.seen = 0;
        }
        if sent >= total {
            return None;
        }
        if self.meter.is_none() {
            if sent == 0 {
                return None;
            }
            self.meter = RateMeter::new(self.min_rate, self.window, now);
        }
        let meter = self.meter.as_mut()?;
        meter.record(sent - self.seen, now);
        self.seen = sent;
        meter.check(now)
    }

    /// How often to call [`observe`](Self::observe).
    pub(crate) fn interval(&self) -> Duration {
        (self.window / 16).clamp(Duration::from_millis(10), Duration::from_millis(100))
    }
}

/// The next chunk of `stream`, counted by `watchdog` (if any); `Err` when
/// the transfer stalls first.
pub(crate) async fn next_chunk<S, B, E>(
    stream: &mut S,
    watchdog: &mut Option<Watchdog>,
) -> Result<Option<Result<B, E>>, Stall>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    let Some(dog) = watchdog else {
        return Ok(stream.next().await);
    };
    loop {
        tokio::select! {
            item = stream.next() => {
                if let Some(Ok(chunk)) = &item {
                    dog.record(chunk.as_ref().len() as u64)?;
                }
                return Ok(item);
            }
            ticked = dog.tick() => ticked?,
        }
    }
}

/// `60s`, `2.5s`: a window as shown in messages.
pub(crate) fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn off_when_no_minimum() {
        let t0 = Instant::now();
        assert!(RateMeter::new(0, secs(60.0), t0).is_none());
        assert!(RateMeter::new(1024, Duration::ZERO, t0).is_none());
    }

    #[test]
    fn no_verdict_within_the_first_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(1024, secs(60.0), t0).unwrap();
        assert_eq!(m.check(t0 + secs(59.9)), None);
        let stall = m.check(t0 + secs(60.0)).unwrap();
        assert_eq!(stall.bytes, 0);
        assert_eq!(stall.rate(), 0);
    }

    #[test]
    fn steady_slow_transfer_stalls_and_fast_one_does_not() {
        let t0 = Instant::now();
        // 12 B/s, a byte every 1/12 s.
        let mut slow = RateMeter::new(1024, secs(60.0), t0).unwrap();
        // 2 KiB/s.
        let mut fast = RateMeter::new(1024, secs(60.0), t0).unwrap();
        let mut stalled_at = None;
        for i in 1..=12 * 120 {
            let now = t0 + secs(f64::from(i) / 12.0);
            slow.record(1, now);
            fast.record(2048 / 12, now);
            assert_eq!(fast.check(now), None, "at {i}");
            if stalled_at.is_none()
                && let Some(s) = slow.check(now)
            {
                stalled_at = Some((i, s));
            }
        }
        let (i, stall) = stalled_at.unwrap();
        assert_eq!(i, 12 * 60);
        assert_eq!(stall.rate(), 12);
    }

    #[test]
    fn a_burst_then_silence_stalls_one_window_after_the_burst() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(1024, secs(10.0), t0).unwrap();
        m.record(1 << 20, t0 + secs(5.0));
        assert_eq!(m.check(t0 + secs(10.0)), None);
        assert_eq!(m.check(t0 + secs(14.9)), None);
        let stall = m.check(t0 + secs(15.0)).unwrap();
        assert_eq!(stall.bytes, 0);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(100, secs(10.0), t0).unwrap();
        // 200 B/s for 20 s, then 50 B/s.
        let mut now = t0;
        for _ in 0..200 {
            now += secs(0.1);
            m.record(20, now);
            assert_eq!(m.check(now), None);
        }
        let mut stalled = None;
        for i in 0..200 {
            now += secs(0.1);
            m.record(5, now);
            if let Some(s) = m.check(now) {
                stalled = Some((i, s));
                break;
            }
        }
        // Below 100 B/s once more than about half the window is slow.
        let (i, stall) = stalled.unwrap();
        assert!((60..=75).contains(&i), "{i}");
        assert!(stall.rate() < 100, "{stall:?}");
    }

    #[test]
    fn window_text() {
        assert_eq!(seconds(secs(60.0)), "60s");
        assert_eq!(seconds(secs(2.5)), "2.5s");
    }
}
