//! The broadcast rate ladder: judge one step, pick the next rate, and name
//! the sustainable figure once the ladder stops.
//!
//! Pure: no processes, no clocks. A step *passes* when nothing was lost and
//! the message p99 is at most [`P99_LIMIT_MS`]. The invariant a reader must
//! keep: a figure measured while the load generator was the limit is never
//! reported as the server's capacity, only as a lower bound ("≥ X").

use serde::Serialize;

/// A step fails once its message p99 exceeds this, ms.
pub const P99_LIMIT_MS: f64 = 50.0;
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
    /// Once a pass and a failure above it bracket the capacity, how many
    /// steps to spend narrowing the bracket (each at the geometric middle
    /// of the highest pass and the lowest failure above it). They come on
    /// top of `max_steps`.
    pub refinements: usize,
}

/// A bracket narrower than this ratio is not refined further.
const MIN_BRACKET: f64 = 1.15;

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
    let bracket = ceiling.observation.rate / best.observation.rate;
    if refinements_run(steps) < ladder.refinements && bracket > MIN_BRACKET {
        return Next::Run((best.observation.rate * ceiling.observation.rate).sqrt());
    }
    match ceiling.verdict {
        Verdict::LoadgenBound(_) => Next::Done(at_least(best, Bound::Loadgen)),
        _ => Next::Done(Capacity::Sustained { step: best.observation.clone() }),
    }
}

/// No step has passed yet: divide the rate while step-downs are left.
fn step_down(ladder: &Ladder, steps: &[Step], last: &Step) -> Next {
    let lowest_rate = steps.iter().map(|step| step.observation.rate).fold(last.observation.rate, f64::min);
    let loadgen_bound = matches!(last.verdict, Verdict::LoadgenBound(_));
    if loadgen_bound || steps.len() > ladder.max_step_downs || steps.len() >= ladder.max_steps {
        Next::Done(Capacity::NonePassed { lowest_rate, loadgen_bound })
    } else {
        Next::Run(lowest_rate / ladder.factor)
    }
}

/// Steps run after the first pass and a failure above it were both known.
fn refinements_run(steps: &[Step]) -> usize {
    let bracketed = (1..=steps.len()).find(|&n| {
        best_pass(&steps[..n])
            .is_some_and(|best| lowest_failure_above(&steps[..n], best.observation.rate).is_some())
    });
    bracketed.map_or(0, |n| steps.len() - n)
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

    const LADDER: Ladder =
        Ladder { start_rate: 10.0, factor: 2.0, max_steps: 5, max_step_downs: 1, refinements: 0 };

    fn observed(rate: f64, p99_ms: f64) -> Observation {
        Observation {
            rate,
            deliveries_per_s: rate * 1000.0,
            p99_ms: Some(p99_ms),
            loss: None,
            loadgen_saturated: false,
            loadgen_late: false,
        }
    }

    fn steps(observations: &[Observation]) -> Vec<Step> {
        observations.iter().cloned().map(Step::new).collect()
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
        assert_eq!(next(&LADDER, &history), Next::Done(Capacity::Sustained { step: observed(20.0, 9.0) }));
    }

    #[test]
    fn loadgen_bound_steps_give_only_a_lower_bound() {
        let late = Observation { loadgen_late: true, ..observed(20.0, 90.0) };
        let history = steps(&[observed(10.0, 3.0), late]);
        let expected = Capacity::AtLeast { step: observed(10.0, 3.0), bound: Bound::Loadgen };
        assert_eq!(next(&LADDER, &history), Next::Done(expected));
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
        assert_eq!(next(&LADDER, &recovered), Next::Done(Capacity::Sustained { step: observed(5.0, 4.0) }));
        let hopeless = steps(&[observed(10.0, 99.0), observed(5.0, 98.0)]);
        let expected = Capacity::NonePassed { lowest_rate: 5.0, loadgen_bound: false };
        assert_eq!(next(&LADDER, &hopeless), Next::Done(expected));
    }

    #[test]
    fn a_refining_ladder_narrows_the_bracket_before_it_stops() {
        let ladder = Ladder { refinements: 2, ..LADDER };
        let bracketed = steps(&[observed(10.0, 3.0), observed(20.0, 9.0), observed(40.0, 70.0)]);
        let Next::Run(middle) = next(&ladder, &bracketed) else { panic!("expected a refinement") };
        assert!((middle - 800f64.sqrt()).abs() < 1e-9, "geometric middle of 20 and 40, got {middle}");

        // The middle passes: the bracket is now 28.3..40, refined once more.
        let mut history = bracketed.clone();
        history.push(Step::new(observed(middle, 30.0)));
        let Next::Run(upper) = next(&ladder, &history) else { panic!("expected a second refinement") };
        assert!(upper > middle && upper < 40.0);

        // It fails: two refinements spent, the middle is the figure.
        history.push(Step::new(observed(upper, 60.0)));
        assert_eq!(next(&ladder, &history), Next::Done(Capacity::Sustained { step: observed(middle, 30.0) }));
    }

    #[test]
    fn a_refinement_keeps_a_loadgen_bound_ceiling_a_lower_bound() {
        let ladder = Ladder { refinements: 1, ..LADDER };
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
        let ladder = Ladder { factor: 1.1, refinements: 3, ..LADDER };
        let history = steps(&[observed(10.0, 3.0), observed(11.0, 70.0)]);
        assert_eq!(next(&ladder, &history), Next::Done(Capacity::Sustained { step: observed(10.0, 3.0) }));
    }
}
