//! Forced drops (`broadcast --drop-every`): listening members lose their
//! connection at the TCP level while their rooms are broadcast to, come
//! back the way socket.io-client does, and are judged on what they missed.
//!
//! A listener (a member that does not publish) is first dropped at a point
//! spread uniformly over the first `every` of the publishing window, then
//! `every` (±50 %) after each return, until publishing ends. Drops alternate
//! between a reset and a plain close (FIN), neither with a goodbye, so the
//! server sees what a vanished network looks like. After a pause of
//! `reconnect_delay` ±50 % (socket.io-client's `reconnectionDelay` and
//! `randomizationFactor`), doubling up to 5 s while attempts fail, the
//! member reconnects with `{pid, offset}` when the server offered recovery;
//! a fresh session joins its room again, as an application does when
//! `socket.recovered` is false. Publishers stay connected: a send in flight
//! when its connection dies has no ack to say whether the server took it,
//! and the delivery figures need exact expectations.
//!
//! Afterwards [`spread`] turns each member's trackers into delivered ÷
//! expected, and summarizes dropped and never-dropped members separately.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Harness, room_name};
use crate::accounting::SeqTracker;
use crate::noise;
use crate::report::{DeliverySpread, DropReport};
use crate::schedule::duration_ns;
use crate::session::{Counts, Ended, Session};

/// The longest pause between reconnect attempts (socket.io-client's
/// `reconnectionDelayMax`).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// How listeners are dropped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropPlan {
    /// Mean time a listener stays connected.
    pub every: Duration,
    /// Mean pause before a dropped listener reconnects.
    pub reconnect_delay: Duration,
}

/// Listens until the run is cancelled, dropped per `plan` within `window`
/// (start and end, clock ns). `token` authenticates the reconnects, `room`
/// is joined again after a fresh session, and `dropping` counts this member
/// until it is back from its last drop (or the run is cancelled).
///
/// # Errors
/// [`Ended`] when the connection ends other than by a planned drop, or a
/// rejoin is refused.
pub(crate) async fn listen(
    harness: &Harness,
    session: &mut Session,
    token: &str,
    (room, dropping): (u32, &AtomicU64),
    window: (u64, u64),
    plan: DropPlan,
) -> Result<(), Ended> {
    let (start_ns, end_ns) = window;
    let clock = harness.clock();
    let every_ns = duration_ns(plan.every).max(1);
    let mut dice = Dice::new(session.id);
    let mut next_ns = start_ns + dice.below(every_ns);
    let mut drops = 0u64;
    dropping.fetch_add(1, Ordering::Relaxed);
    let still_dropping = Decrement(dropping);
    while next_ns < end_ns {
        session.pump_until(clock.sleep_until(next_ns)).await?;
        session.drop_connection(drops % 2 == 1);
        drops += 1;
        come_back(harness, session, token, room, plan, &mut dice).await?;
        next_ns = clock.now_ns() + dice.jitter(every_ns);
    }
    drop(still_dropping);
    session.pump_until(std::future::pending::<()>()).await
}

/// Takes one off a counter when dropped, however the holder ends.
struct Decrement<'a>(&'a AtomicU64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reconnects `session` after a drop, retrying with a growing pause; joins
/// `room` again when the server did not recover the session.
async fn come_back(
    harness: &Harness,
    session: &mut Session,
    token: &str,
    room: u32,
    plan: DropPlan,
    dice: &mut Dice,
) -> Result<(), Ended> {
    let mut delay = plan.reconnect_delay;
    loop {
        // The pause is the simulated user's, not a wait for an event.
        tokio::time::sleep(Duration::from_nanos(dice.jitter(duration_ns(delay)))).await;
        match session.reconnect(token).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                let timeout = harness.shared.target.connect_timeout();
                session.join(&room_name(room), harness.clock().now_ns(), timeout).await?;
                return Ok(());
            }
            Err(error) => {
                tracing::debug!(id = session.id, %error, "reconnect failed");
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// A deterministic random sequence per member, so a run drops the same
/// members at the same points whatever the server.
#[derive(Debug)]
struct Dice(u64);

impl Dice {
    fn new(id: u32) -> Self {
        Self(noise::seed(u64::from(id)))
    }

    fn next(&mut self) -> u64 {
        noise::xorshift64(&mut self.0)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }

    /// `mean` ±50 %, uniform.
    fn jitter(&mut self, mean: u64) -> u64 {
        mean / 2 + self.below(mean.max(1))
    }
}

/// One member's deliveries, for [`spread`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberDeliveries {
    /// Distinct messages delivered.
    pub delivered: u64,
    /// Messages its room's publishers had accepted.
    pub expected: u64,
    /// Whether it was dropped at least once.
    pub dropped: bool,
}

impl MemberDeliveries {
    /// Sums a member's trackers against what each publisher had accepted.
    pub(crate) fn new(
        trackers: &[(u32, SeqTracker)],
        accepted: impl Fn(u32) -> u64,
        counts: &Counts,
    ) -> Self {
        let (mut delivered, mut expected) = (0, 0);
        for (publisher, tracker) in trackers {
            let owed = accepted(*publisher);
            expected += owed;
            delivered += tracker.unique().min(owed);
        }
        Self { delivered, expected, dropped: counts.drops > 0 }
    }
}

/// The drops' report: counts summed over sessions, and delivered ÷
/// expected per member, dropped and never-dropped apart.
pub(crate) fn spread(plan: DropPlan, counts: &Counts, members: &[MemberDeliveries]) -> DropReport {
    let of = |dropped: bool| {
        let ratios: Vec<f64> = members
            .iter()
            .filter(|member| member.dropped == dropped && member.expected > 0)
            .map(|member| member.delivered as f64 / member.expected as f64)
            .collect();
        DeliverySpread::new(ratios)
    };
    DropReport {
        every_s: plan.every.as_secs_f64(),
        reconnect_delay_s: plan.reconnect_delay.as_secs_f64(),
        drops: counts.drops,
        recovered: counts.recovered,
        fresh_sessions: counts.fresh_sessions,
        reconnect_failures: counts.reconnect_failures,
        pid_acks: counts.pid_acks,
        dropped: of(true),
        never_dropped: of(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dice_stay_in_their_bounds() {
        let mut dice = Dice::new(7);
        for _ in 0..1000 {
            assert!(dice.below(10) < 10);
            let jittered = dice.jitter(1000);
            assert!((500..1500).contains(&jittered), "{jittered}");
        }
        assert_eq!(Dice::new(3).next(), Dice::new(3).next(), "the same member rolls the same");
        assert_ne!(Dice::new(3).next(), Dice::new(4).next());
    }

    #[test]
    fn members_are_judged_on_what_their_publishers_had_accepted() {
        let mut tracker = SeqTracker::default();
        for seq in [0, 1, 2, 5, 6, 2] {
            tracker.observe(seq);
        }
        let counts = Counts { drops: 2, ..Counts::default() };
        let member = MemberDeliveries::new(&[(0, tracker)], |_| 10, &counts);
        assert_eq!((member.delivered, member.expected, member.dropped), (5, 10, true));
        let steady = MemberDeliveries { delivered: 10, expected: 10, dropped: false };
        let plan = DropPlan { every: Duration::from_secs(2), reconnect_delay: Duration::from_secs(1) };
        let report = spread(plan, &counts, &[member, steady]);
        assert_eq!(report.dropped.clients, 1);
        assert_eq!(report.dropped.complete, 0);
        assert!((report.dropped.min - 0.5).abs() < 1e-9);
        assert_eq!(report.never_dropped.complete, 1);
        assert_eq!(report.drops, 2);
    }
}
