//! The broadcast rate ladder: judge one step, pick the next rate, and name
//! the sustainable figure once the ladder stops.
//!
//! Pure: no processes, no clocks. A step *passes* when nothing was lost and
//! the message p99 is at most [`P99_LIMIT_MS`]. The ladder climbs by its
//! factor until a step fails, then bisects (geometric middle) the bracket
//! between the highest pass and the lowest failure above it until the
//! bracket is at most [`Ladder::bracket`] wide: with 1.21 the capacity is the
//! bracket's geometric middle ± 10 %. A failure that would bound the
//! capacity but missed the p99 limit by little ([`CLOSE_CALL`]) is run once
//! more at the same rate before it counts: on a noisy machine one unlucky
//! run must not end a ladder. The invariant a reader must keep: a
//! figure measured while the load generator was the limit is never reported
//! as the server's capacity, only as a lower bound ("≥ X").

use serde::Serialize;

/// A step fails once its message p99 exceeds this, ms.
pub const P99_LIMIT_MS: f64 = 50.0;
/// A failure by the p99 alone, at most this many times [`P99_LIMIT_MS`],
/// while loadgen kept up, is a close call: the ladder runs its rate again,
/// and the rate fails only if the second run fails too. On this machine the
/// p99 of identical 8 s runs moves by ±10 ms.
pub const CLOSE_CALL: f64 = 1.2;
/// Share of its worker threads' capacity, averaged over the publishing
/// seconds, from which loadgen counts as saturated. Stricter than
/// loadgen's own 85 %: pinned, it has one thread, deliveries arrive in
/// bursts (a room's worth at once), and a thread that busy already delays
/// reading them, which its schedule lag does not show.
pub const LOADGEN_BUSY_UTILIZATION: f64 = 0.75;
/// Mean schedule lag in any publishing second from which loadgen counts as
/// late, ms. Its timer alone accounts for about 1 ms.
pub const LOADGEN_LATE_MEAN_MS: f64 = 5.0;

/// How the ladder climbs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ladder {
    /// Messages per second per publisher of the first step.
    pub start_rate: f64,
    /// Each step's rate is the previous one's times this.
    pub factor: f64,
    /// Steps at most, step-downs included.
    pub max_steps: usize,
    /// When the first step fails, how many times to divide by `factor`.
    pub max_step_downs: usize,
    /// Once a pass and a failure above it bracket the capacity, bisect
    /// (each step at the geometric middle of the highest pass and the
    /// lowest failure above it) until the failure's rate over the pass's
    /// is at most this ratio.
    pub bracket: f64,
    /// Bisection steps at most, on top of `max_steps`: a noisy machine can
    /// keep a bracket from closing (a pass above a failure), and the ladder
    /// must end.
    pub max_refinements: usize,
}

/// [`Ladder::bracket`] for ±10 %: the capacity lies between the highest
/// pass and the lowest failure, so when their ratio is at most 1.1², their
/// geometric middle is within 10 % of either end.
pub const BRACKET_TEN_PERCENT: f64 = 1.21;

/// What one loadgen run at one rate observed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Observation {
    /// Messages per second per publisher.
    pub rate: f64,
    /// Distinct deliveries per second of the publishing phase.
    pub deliveries_per_s: f64,
    /// p99 of the message phase, ms; `None` when nothing was delivered.
    pub p99_ms: Option<f64>,
    /// What loadgen reported lost (deliveries, notices, clients), if
    /// anything.
    pub loss: Option<String>,
    /// loadgen's CPU was at its limit while publishing.
    pub loadgen_saturated: bool,
    /// loadgen fell behind its schedule while publishing.
    pub loadgen_late: bool,
}

#[cfg(test)]
impl Observation {
    /// A clean run for the tests: no loss, loadgen keeping up.
    pub(crate) fn clean(rate: f64, deliveries_per_s: f64, p99_ms: f64) -> Self {
        Self {
            rate,
            deliveries_per_s,
            p99_ms: Some(p99_ms),
            loss: None,
            loadgen_saturated: false,
            loadgen_late: false,
        }
    }
}

/// The judgement of one step.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "verdict", content = "why", rename_all = "snake_case")]
pub enum Verdict {
    /// Within the limits, loadgen keeping up.
    Pass,
    /// Within the limits, but loadgen was saturated: no higher step can
    /// be trusted.
    PassLoadgenBound,
    /// Over a limit while loadgen kept up: the server's limit.
    Fail(String),
    /// Over a limit while loadgen was saturated or late: inconclusive.
    LoadgenBound(String),
}

impl Verdict {
    /// Whether the step was within the limits.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass | Verdict::PassLoadgenBound)
    }
}

/// Judges one step.
pub fn judge(observation: &Observation) -> Verdict {
    let over = match observation.p99_ms {
        _ if observation.loss.is_some() => observation.loss.as_ref().map(|what| format!("loss: {what}")),
        None => Some("nothing delivered".to_owned()),
        Some(p99) if p99 > P99_LIMIT_MS => Some(format!("p99 {p99:.1} ms > {P99_LIMIT_MS} ms")),
        Some(_) => None,
    };
    let loadgen_limited = observation.loadgen_saturated || observation.loadgen_late;
    match over {
        None if observation.loadgen_saturated => Verdict::PassLoadgenBound,
        None => Verdict::Pass,
        Some(why) if loadgen_limited => Verdict::LoadgenBound(why),
        Some(why) => Verdict::Fail(why),
    }
}

/// A judged step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// What was observed.
    pub observation: Observation,
    /// Its judgement.
    pub verdict: Verdict,
}

impl Step {
    /// Judges `observation`.
    pub fn new(observation: Observation) -> Self {
        let verdict = judge(&observation);
        Self { observation, verdict }
    }
}

/// Why a figure is only a lower bound.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The load generator was the limit.
    Loadgen,
    /// The ladder ran out of steps while still passing.
    StepLimit,
}

/// The outcome of a ladder.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Capacity {
    /// The highest passing step, with a higher step failing by the server.
    Sustained {
        /// The passing step.
        step: Observation,
        /// The lowest failing step above it.
        ceiling: Observation,
    },
    /// The highest passing step; the server's limit is higher.
    AtLeast {
        /// The passing step.
        step: Observation,
        /// Why the ladder stopped there.
        bound: Bound,
    },
    /// No step passed.
    NonePassed {
        /// Lowest rate tried, per publisher.
        lowest_rate: f64,
        /// Whether the load generator was the limit at that rate.
        loadgen_bound: bool,
    },
}

/// What to do after the steps so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Run a step at this rate.
    Run(f64),
    /// Stop; this is the figure.
    Done(Capacity),
}

/// The next move of the ladder given the steps so far (in run order).
pub fn next(ladder: &Ladder, steps: &[Step]) -> Next {
    let Some(last) = steps.last() else { return Next::Run(ladder.start_rate) };
    let Some(best) = best_pass(steps) else { return step_down(ladder, steps, last) };
    if best.verdict == Verdict::PassLoadgenBound {
        // Nothing measured at or above a saturated loadgen can be trusted.
        return Next::Done(at_least(best, Bound::Loadgen));
    }
    let Some(ceiling) = lowest_failure_above(steps, best.observation.rate) else {
        return if steps.len() >= ladder.max_steps {
            Next::Done(at_least(best, Bound::StepLimit))
        } else {
            Next::Run(best.observation.rate * ladder.factor)
        };
    };
    if is_close_call(ceiling) && runs_at(steps, ceiling.observation.rate) == 1 {
        // Once per rate, so the ladder still ends; not counted as a refinement.
        return Next::Run(ceiling.observation.rate);
    }
    let bracket = ceiling.observation.rate / best.observation.rate;
    if refinements_run(steps) < ladder.max_refinements && bracket > ladder.bracket {
        return Next::Run((best.observation.rate * ceiling.observation.rate).sqrt());
    }
    match ceiling.verdict {
        Verdict::LoadgenBound(_) => Next::Done(at_least(best, Bound::Loadgen)),
        _ => Next::Done(Capacity::Sustained {
            step: best.observation.clone(),
            ceiling: ceiling.observation.clone(),
        }),
    }
}

impl Capacity {
    /// The highest passing step, if any.
    pub fn step(&self) -> Option<&Observation> {
        match self {
            Capacity::Sustained { step, .. } | Capacity::AtLeast { step, .. } => Some(step),
            Capacity::NonePassed { .. } => None,
        }
    }

    /// Rates per publisher of the highest pass and the lowest failure above
    /// it, when the server's own limit bracketed the capacity.
    pub fn bracket(&self) -> Option<(f64, f64)> {
        match self {
            Capacity::Sustained { step, ceiling } => Some((step.rate, ceiling.rate)),
            _ => None,
        }
    }
}

/// No step has passed yet: divide the rate while step-downs are left. A
/// step lost to loadgen is stepped down from too: a lower rate asks less of
/// loadgen, and on an oversubscribed host its lateness is the neighbours'.
fn step_down(ladder: &Ladder, steps: &[Step], last: &Step) -> Next {
    let lowest_rate = steps.iter().map(|step| step.observation.rate).fold(last.observation.rate, f64::min);
    let loadgen_bound = matches!(last.verdict, Verdict::LoadgenBound(_));
    if steps.len() > ladder.max_step_downs || steps.len() >= ladder.max_steps {
        Next::Done(Capacity::NonePassed { lowest_rate, loadgen_bound })
    } else {
        Next::Run(lowest_rate / ladder.factor)
    }
}

/// Steps run at a new rate after the first pass and a failure above it were
/// both known (a close call's second run is not one).
fn refinements_run(steps: &[Step]) -> usize {
    let bracketed = (1..=steps.len()).find(|&n| {
        best_pass(&steps[..n])
            .is_some_and(|best| lowest_failure_above(&steps[..n], best.observation.rate).is_some())
    });
    bracketed.map_or(0, |n| {
        (n..steps.len()).filter(|&i| runs_at(&steps[..i], steps[i].observation.rate) == 0).count()
    })
}

/// Whether `step` failed by its p99 alone and by little, loadgen keeping up.
fn is_close_call(step: &Step) -> bool {
    matches!(step.verdict, Verdict::Fail(_))
        && step.observation.loss.is_none()
        && step.observation.p99_ms.is_some_and(|p99| p99 <= P99_LIMIT_MS * CLOSE_CALL)
}

/// How many of `steps` ran at `rate` (a rerun repeats the rate exactly).
fn runs_at(steps: &[Step], rate: f64) -> usize {
    steps.iter().filter(|step| step.observation.rate.total_cmp(&rate).is_eq()).count()
}

fn lowest_failure_above(steps: &[Step], rate: f64) -> Option<&Step> {
    steps
        .iter()
        .filter(|step| !step.verdict.is_pass() && step.observation.rate > rate)
        .min_by(|a, b| a.observation.rate.total_cmp(&b.observation.rate))
}

fn best_pass(steps: &[Step]) -> Option<&Step> {
    steps
        .iter()
        .filter(|step| step.verdict.is_pass())
        .max_by(|a, b| a.observation.rate.total_cmp(&b.observation.rate))
}

fn at_least(step: &Step, bound: Bound) -> Capacity {
    Capacity::AtLeast { step: step.observation.clone(), bound }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No bisection: a bracket as wide as any climb is accepted.
    const LADDER: Ladder = Ladder {
        start_rate: 10.0,
        factor: 2.0,
        max_steps: 5,
        max_step_downs: 1,
        bracket: 2.0,
        max_refinements: 0,
    };

    fn observed(rate: f64, p99_ms: f64) -> Observation {
        Observation::clean(rate, rate * 1000.0, p99_ms)
    }

    fn steps(observations: &[Observation]) -> Vec<Step> {
        observations.iter().cloned().map(Step::new).collect()
    }

    fn sustained(step: Observation, ceiling: Observation) -> Next {
        Next::Done(Capacity::Sustained { step, ceiling })
    }

    /// Runs `ladder` against a server whose p99 passes below `capacity`
    /// and fails above it; returns the rates tried and the outcome.
    fn climb_against(ladder: &Ladder, capacity: f64) -> (Vec<f64>, Capacity) {
        let mut history = Vec::new();
        loop {
            match next(ladder, &history) {
                Next::Run(rate) => {
                    let p99 = if rate <= capacity { 10.0 } else { 90.0 };
                    history.push(Step::new(observed(rate, p99)));
                }
                Next::Done(capacity) => {
                    return (history.iter().map(|step| step.observation.rate).collect(), capacity);
                }
            }
            assert!(history.len() < 50, "the ladder must end");
        }
    }

    #[test]
    fn judging_separates_server_limits_from_loadgen_limits() {
        assert_eq!(judge(&observed(1.0, 50.0)), Verdict::Pass);
        assert!(matches!(judge(&observed(1.0, 50.1)), Verdict::Fail(why) if why.contains("p99 50.1")));
        let lossy = Observation { loss: Some("3 of 9 messages lost".to_owned()), ..observed(1.0, 2.0) };
        assert_eq!(judge(&lossy), Verdict::Fail("loss: 3 of 9 messages lost".to_owned()));
        let late = Observation { loadgen_late: true, ..observed(1.0, 80.0) };
        assert!(matches!(judge(&late), Verdict::LoadgenBound(_)));
        let late_but_fast = Observation { loadgen_late: true, ..observed(1.0, 8.0) };
        assert_eq!(judge(&late_but_fast), Verdict::Pass);
        let busy = Observation { loadgen_saturated: true, ..observed(1.0, 8.0) };
        assert_eq!(judge(&busy), Verdict::PassLoadgenBound);
        let silent = Observation { p99_ms: None, ..observed(1.0, 0.0) };
        assert_eq!(judge(&silent), Verdict::Fail("nothing delivered".to_owned()));
    }

    #[test]
    fn ladder_climbs_until_the_server_fails_and_keeps_the_last_pass() {
        assert_eq!(next(&LADDER, &[]), Next::Run(10.0));
        assert_eq!(next(&LADDER, &steps(&[observed(10.0, 3.0)])), Next::Run(20.0));
        let history = steps(&[observed(10.0, 3.0), observed(20.0, 9.0), observed(40.0, 70.0)]);
        assert_eq!(next(&LADDER, &history), sustained(observed(20.0, 9.0), observed(40.0, 70.0)));
        let Next::Done(capacity) = next(&LADDER, &history) else { panic!("done") };
        assert_eq!(capacity.bracket(), Some((20.0, 40.0)));
        assert_eq!(capacity.step(), Some(&observed(20.0, 9.0)));
    }

    #[test]
    fn loadgen_bound_steps_give_only_a_lower_bound() {
        let late = Observation { loadgen_late: true, ..observed(20.0, 90.0) };
        let history = steps(&[observed(10.0, 3.0), late]);
        let expected = Capacity::AtLeast { step: observed(10.0, 3.0), bound: Bound::Loadgen };
        assert_eq!(next(&LADDER, &history), Next::Done(expected.clone()));
        assert_eq!(expected.bracket(), None, "a loadgen failure brackets nothing");
        let busy = Observation { loadgen_saturated: true, ..observed(10.0, 3.0) };
        let expected = Capacity::AtLeast { step: busy.clone(), bound: Bound::Loadgen };
        assert_eq!(next(&LADDER, &steps(&[busy])), Next::Done(expected));
    }

    #[test]
    fn ladder_stops_at_its_step_limit_with_a_lower_bound() {
        let rates = [10.0, 20.0, 40.0, 80.0, 160.0];
        let history = steps(&rates.map(|rate| observed(rate, 1.0)));
        let expected = Capacity::AtLeast { step: observed(160.0, 1.0), bound: Bound::StepLimit };
        assert_eq!(next(&LADDER, &history), Next::Done(expected));
    }

    #[test]
    fn a_failing_first_step_steps_down_then_gives_up() {
        let history = steps(&[observed(10.0, 99.0)]);
        assert_eq!(next(&LADDER, &history), Next::Run(5.0));
        let recovered = steps(&[observed(10.0, 99.0), observed(5.0, 4.0)]);
        assert_eq!(next(&LADDER, &recovered), sustained(observed(5.0, 4.0), observed(10.0, 99.0)));
        let hopeless = steps(&[observed(10.0, 99.0), observed(5.0, 98.0)]);
        let expected = Capacity::NonePassed { lowest_rate: 5.0, loadgen_bound: false };
        assert_eq!(next(&LADDER, &hopeless), Next::Done(expected));
    }

    #[test]
    fn a_first_step_lost_to_loadgen_steps_down_and_stays_a_lower_bound() {
        let late = |rate: f64| Observation { loadgen_late: true, ..observed(rate, 90.0) };
        assert_eq!(next(&LADDER, &steps(&[late(10.0)])), Next::Run(5.0));
        let expected = Capacity::NonePassed { lowest_rate: 5.0, loadgen_bound: true };
        assert_eq!(next(&LADDER, &steps(&[late(10.0), late(5.0)])), Next::Done(expected));
        // A pass below it: the ceiling was loadgen's, so the figure is a bound.
        let ladder = Ladder { max_refinements: 0, ..LADDER };
        let recovered = steps(&[late(10.0), observed(5.0, 4.0)]);
        let expected = Capacity::AtLeast { step: observed(5.0, 4.0), bound: Bound::Loadgen };
        assert_eq!(next(&ladder, &recovered), Next::Done(expected));
    }

    #[test]
    fn bisection_narrows_the_bracket_to_ten_percent() {
        let ladder = Ladder { factor: 3.0, bracket: BRACKET_TEN_PERCENT, max_refinements: 8, ..LADDER };
        for capacity in [12.0, 25.0, 59.0, 61.0, 100.0, 170.0] {
            let (rates, outcome) = climb_against(&ladder, capacity);
            let Some((pass, fail)) = outcome.bracket() else { panic!("{capacity}: {outcome:?}") };
            assert!(pass <= capacity && capacity < fail, "{capacity} outside [{pass}, {fail})");
            assert!(fail / pass <= BRACKET_TEN_PERCENT, "{capacity}: bracket {pass}..{fail} after {rates:?}");
            let middle = (pass * fail).sqrt();
            assert!((capacity / middle - 1.0).abs() <= 0.1, "{capacity}: middle {middle}");
        }
        // The quick 20×100 ladder that reported two servers equal: ×3 from
        // 20 passed 20 and failed 60, and stopped there. Now 60 is bisected.
        let quick = Ladder { start_rate: 20.0, ..ladder };
        let (rates, outcome) = climb_against(&quick, 45.0);
        assert_eq!(&rates[..2], &[20.0, 60.0]);
        assert!((rates[2] - 1200f64.sqrt()).abs() < 1e-9, "then the middle of 20 and 60: {rates:?}");
        let (pass, fail) = outcome.bracket().expect("bracketed");
        assert!(fail / pass <= BRACKET_TEN_PERCENT && pass <= 45.0 && 45.0 < fail);
    }

    #[test]
    fn bisection_takes_the_geometric_middle_and_keeps_the_last_pass() {
        let ladder = Ladder { bracket: 1.15, max_refinements: 2, ..LADDER };
        let bracketed = steps(&[observed(10.0, 3.0), observed(20.0, 9.0), observed(40.0, 70.0)]);
        let Next::Run(middle) = next(&ladder, &bracketed) else { panic!("expected a refinement") };
        assert!((middle - 800f64.sqrt()).abs() < 1e-9, "geometric middle of 20 and 40, got {middle}");

        // The middle passes: the bracket is now 28.3..40, refined once more.
        let mut history = bracketed.clone();
        history.push(Step::new(observed(middle, 30.0)));
        let Next::Run(upper) = next(&ladder, &history) else { panic!("expected a second refinement") };
        assert!(upper > middle && upper < 40.0);

        // It fails: two refinements spent, the middle is the figure.
        history.push(Step::new(observed(upper, 70.0)));
        assert_eq!(next(&ladder, &history), sustained(observed(middle, 30.0), observed(upper, 70.0)));
    }

    #[test]
    fn a_noisy_pass_above_a_failure_moves_the_bracket_up() {
        let ladder = Ladder { bracket: BRACKET_TEN_PERCENT, max_refinements: 4, ..LADDER };
        // 20 passed, 40 failed, the middle 28.3 failed, then 40 is not
        // retried but a noisy pass at 24 ... is simply the new best.
        let history =
            steps(&[observed(20.0, 9.0), observed(40.0, 70.0), observed(30.0, 70.0), observed(24.0, 9.0)]);
        let Next::Run(rate) = next(&ladder, &history) else { panic!("30/24 is wider than 1.21") };
        assert!((rate - 720f64.sqrt()).abs() < 1e-9, "between 24 and 30, got {rate}");
        // Out of refinements with the bracket still wide: the last pass stands.
        let ladder = Ladder { max_refinements: 2, ..ladder };
        assert_eq!(next(&ladder, &history), sustained(observed(24.0, 9.0), observed(30.0, 70.0)));
    }

    #[test]
    fn a_close_call_is_run_again_before_it_bounds_the_capacity() {
        let ladder = Ladder { bracket: BRACKET_TEN_PERCENT, max_refinements: 2, ..LADDER };
        // 40 missed the limit by 4 ms: run it again rather than bisect.
        let close = steps(&[observed(20.0, 9.0), observed(40.0, 54.0)]);
        assert_eq!(next(&ladder, &close), Next::Run(40.0));

        // It passes the second time: 40 is the best pass and the climb goes on.
        let mut passed = close.clone();
        passed.push(Step::new(observed(40.0, 44.0)));
        assert_eq!(next(&ladder, &passed), Next::Run(80.0));

        // It fails again: confirmed, and bisection starts with both
        // refinements left (the second run was not one).
        let mut confirmed = close;
        confirmed.push(Step::new(observed(40.0, 51.0)));
        let Next::Run(middle) = next(&ladder, &confirmed) else { panic!("expected a refinement") };
        assert!((middle - 800f64.sqrt()).abs() < 1e-9, "between 20 and 40, got {middle}");
        confirmed.push(Step::new(observed(middle, 70.0)));
        let Next::Run(lower) = next(&ladder, &confirmed) else { panic!("a second refinement is left") };
        assert!(lower > 20.0 && lower < middle);
        confirmed.push(Step::new(observed(lower, 9.0)));
        assert_eq!(next(&ladder, &confirmed), sustained(observed(lower, 9.0), observed(middle, 70.0)));
    }

    #[test]
    fn only_a_narrow_server_failure_is_a_close_call() {
        let ladder = Ladder { bracket: 2.5, max_refinements: 2, ..LADDER };
        let history = |ceiling: Observation| steps(&[observed(20.0, 9.0), ceiling]);
        // Far over the limit, lossy, or with loadgen late: no second run.
        let far = observed(40.0, P99_LIMIT_MS * CLOSE_CALL + 0.1);
        assert_eq!(next(&ladder, &history(far.clone())), sustained(observed(20.0, 9.0), far));
        let lossy = Observation { loss: Some("1 message lost".to_owned()), ..observed(40.0, 51.0) };
        assert_eq!(next(&ladder, &history(lossy.clone())), sustained(observed(20.0, 9.0), lossy));
        let late = Observation { loadgen_late: true, ..observed(40.0, 51.0) };
        let expected = Capacity::AtLeast { step: observed(20.0, 9.0), bound: Bound::Loadgen };
        assert_eq!(next(&ladder, &history(late)), Next::Done(expected));
        // Just inside: run again.
        assert_eq!(next(&ladder, &history(observed(40.0, P99_LIMIT_MS * CLOSE_CALL))), Next::Run(40.0));
    }

    #[test]
    fn a_refinement_keeps_a_loadgen_bound_ceiling_a_lower_bound() {
        let ladder = Ladder { bracket: 1.15, max_refinements: 1, ..LADDER };
        let late = Observation { loadgen_late: true, ..observed(40.0, 90.0) };
        let mut history = steps(&[observed(20.0, 9.0), late]);
        let Next::Run(middle) = next(&ladder, &history) else { panic!("expected a refinement") };
        history.push(Step::new(observed(middle, 20.0)));
        let expected = Capacity::AtLeast { step: observed(middle, 20.0), bound: Bound::Loadgen };
        assert_eq!(next(&ladder, &history), Next::Done(expected), "the failure above was loadgen's");

        // A refinement that saturates loadgen ends the ladder there.
        let busy = Observation { loadgen_saturated: true, ..observed(middle, 20.0) };
        let history = steps(&[observed(20.0, 9.0), observed(40.0, 90.0), busy.clone()]);
        assert_eq!(
            next(&ladder, &history),
            Next::Done(Capacity::AtLeast { step: busy, bound: Bound::Loadgen })
        );
    }

    #[test]
    fn a_narrow_bracket_is_not_refined() {
        let ladder = Ladder { factor: 1.1, bracket: BRACKET_TEN_PERCENT, max_refinements: 3, ..LADDER };
        let history = steps(&[observed(10.0, 3.0), observed(11.0, 70.0)]);
        assert_eq!(next(&ladder, &history), sustained(observed(10.0, 3.0), observed(11.0, 70.0)));
    }
}
