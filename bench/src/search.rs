//! The zero-loss rate, found as RFC 2544 finds throughput: a binary search
//! over the offered rate for the highest rate at which a trial loses nothing.

/// One trial at an offered rate: what it offered (frames per second,
/// achieved) and how many frames it lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// Rate asked for, frames per second.
    pub target_pps: f64,
    /// Rate the generator actually offered.
    pub offered_pps: f64,
    /// Frames offered and not received.
    pub lost: u64,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroLoss {
    /// Highest offered rate with no loss (frames per second; 0 when even the
    /// lowest trial lost frames).
    pub pps: f64,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// Binary search between `lo` and `hi` frames per second for the highest
/// rate at which `trial` loses nothing, stopping when the interval is
/// narrower than `resolution` (a fraction of `hi`) or after `max_trials`.
/// `hi` is tried first: a device that keeps up with the highest rate is done
/// in one trial.
pub fn zero_loss<E>(
    lo: f64,
    hi: f64,
    resolution: f64,
    max_trials: usize,
    mut trial: impl FnMut(f64) -> Result<Trial, E>,
) -> Result<ZeroLoss, E> {
    let mut trials = Vec::new();
    let mut best = 0.0f64;
    let t = trial(hi)?;
    trials.push(t);
    if t.lost == 0 {
        return Ok(ZeroLoss {
            pps: t.offered_pps,
            trials,
        });
    }
    let (mut pass, mut fail) = (lo, hi);
    let mut first = true;
    while trials.len() < max_trials && (fail - pass) > resolution * hi {
        // Try the bottom first, once, so a device that loses at any rate is found.
        let rate = if first && lo > 0.0 {
            lo
        } else {
            (pass + fail) / 2.0
        };
        let t = trial(rate)?;
        trials.push(t);
        if t.lost == 0 {
            pass = rate;
            best = best.max(t.offered_pps);
        } else {
            fail = rate;
            if first && lo > 0.0 {
                // Even the bottom loses: nothing to search.
                break;
            }
        }
        first = false;
    }
    Ok(ZeroLoss { pps: best, trials })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that loses frames above `cap` pps.
    fn device(cap: f64) -> impl FnMut(f64) -> Result<Trial, ()> {
        move |rate| {
            Ok(Trial {
                target_pps: rate,
                offered_pps: rate,
                lost: if rate > cap {
                    ((rate - cap) as u64).max(1)
                } else {
                    0
                },
            })
        }
    }

    #[test]
    fn converges_to_the_capacity_from_below() {
        for cap in [1.0e6, 3.3e6, 9.99e6, 5.0e5] {
            let z = zero_loss(1e5, 10e6, 0.01, 20, device(cap)).unwrap();
            assert!(z.pps <= cap, "{cap}: {} above the capacity", z.pps);
            assert!(z.pps >= cap - 0.01 * 10e6, "{cap}: {} too far below", z.pps);
            assert!(z.trials.len() <= 20);
            // Every passing trial is below every failing one.
            let max_pass = z
                .trials
                .iter()
                .filter(|t| t.lost == 0)
                .map(|t| t.target_pps);
            let min_fail = z.trials.iter().filter(|t| t.lost > 0).map(|t| t.target_pps);
            assert!(max_pass.fold(0.0, f64::max) < min_fail.fold(f64::INFINITY, f64::min));
        }
    }

    #[test]
    fn a_device_that_keeps_up_needs_one_trial() {
        let z = zero_loss(1e5, 10e6, 0.01, 20, device(20e6)).unwrap();
        assert_eq!(z.trials.len(), 1);
        assert_eq!(z.pps, 10e6);
    }

    #[test]
    fn a_device_that_always_loses_reports_zero() {
        let z = zero_loss(1e5, 10e6, 0.01, 20, device(0.0)).unwrap();
        assert_eq!(z.pps, 0.0);
        assert_eq!(z.trials.len(), 2);
    }

    #[test]
    fn the_trial_budget_is_kept() {
        let z = zero_loss(1e5, 10e6, 1e-9, 5, device(4e6)).unwrap();
        assert_eq!(z.trials.len(), 5);
        assert!(z.pps > 0.0 && z.pps <= 4e6);
    }

    #[test]
    fn errors_stop_the_search() {
        let r = zero_loss(1e5, 10e6, 0.01, 20, |_| Err::<Trial, &str>("port gone"));
        assert_eq!(r.unwrap_err(), "port gone");
    }
}
