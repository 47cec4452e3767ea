//! Ingest rates for the overview's sparklines: every stream's head seq,
//! sampled every [`EVERY`] by a background task that holds the server's
//! state only weakly (it ends with the server and never delays its stop).
//! History starts when the process does; nothing is stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::api::{AppState, Shared};

/// Sampling interval.
pub(super) const EVERY: Duration = Duration::from_secs(10);
/// Samples kept per stream (10 minutes).
const KEEP: usize = 61;

type Samples = HashMap<String, VecDeque<u64>>;

/// Per-stream head samples, oldest first.
#[derive(Clone, Default)]
pub(super) struct Rates {
    samples: Arc<Mutex<Samples>>,
}

impl Rates {
    /// Starts sampling `app`'s streams.
    pub(super) fn start(app: &AppState) -> Self {
        let rates = Rates::default();
        let weak: Weak<Shared> = Arc::downgrade(app);
        let samples = rates.samples.clone();
        // Outside a runtime (a router built in a plain test) there is no
        // sampling: the sparklines stay empty.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let Some(app) = weak.upgrade() else { return };
                    let Ok(streams) = app.store.streams().await else {
                        continue;
                    };
                    drop(app);
                    let mut s = samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for st in streams {
                        let q = s.entry(st.name).or_default();
                        if q.len() == KEEP {
                            q.pop_front();
                        }
                        q.push_back(st.head_seq);
                    }
                }
            });
        }
        rates
    }

    /// Events per sample interval for `stream`, oldest first.
    pub(super) fn deltas(&self, stream: &str) -> Vec<u64> {
        let s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.get(stream)
            .map(|q| {
                q.iter()
                    .zip(q.iter().skip(1))
                    .map(|(a, b)| b.saturating_sub(*a))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An inline SVG sparkline of `values` (presentation attributes only: the
/// CSP allows no inline style), with a text equivalent for screen readers.
pub(super) fn sparkline(values: &[u64]) -> maud::Markup {
    let per_sec = |v: u64| v as f64 / EVERY.as_secs_f64();
    let label = match values.last() {
        None => "no samples yet".to_owned(),
        Some(last) => format!(
            "{:.1} events/s now, {:.1} at most over the last {} minutes",
            per_sec(*last),
            per_sec(values.iter().copied().max().unwrap_or(0)),
            (values.len() as u64 * EVERY.as_secs()).div_ceil(60)
        ),
    };
    let values: Vec<f64> = values.iter().map(|v| *v as f64).collect();
    let points = points(&values, 120.0, 24.0, 1.0);
    maud::html! {
        span class="spark" {
            svg width="120" height="24" viewBox="0 0 120 24" role="img" aria-label=(label) {
                title { (label) }
                @if let Some(p) = &points {
                    polyline points=(p) fill="none" stroke="currentColor" stroke-width="1.5" {}
                }
            }
            span class="visually-hidden" { (label) }
        }
    }
}

/// The `points` of an SVG polyline drawing `values` left to right across
/// `w` x `h`, scaled so the largest (at least `floor`) touches the top;
/// `None` for fewer than two values.
pub(super) fn points(values: &[f64], w: f64, h: f64, floor: f64) -> Option<String> {
    if values.len() < 2 {
        return None;
    }
    let max = values.iter().copied().fold(floor, f64::max);
    let step = w / (values.len() - 1) as f64;
    let pts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - 1.0 - (v / max) * (h - 2.0)
            )
        })
        .collect();
    Some(pts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::points;

    #[test]
    fn points_span_the_box_and_scale_to_the_largest() {
        assert_eq!(points(&[5.0], 10.0, 10.0, 1.0), None);
        assert_eq!(
            points(&[0.0, 2.0], 10.0, 10.0, 1.0).as_deref(),
            Some("0.0,9.0 10.0,1.0")
        );
        // Below the floor, values stay low instead of filling the box.
        assert_eq!(
            points(&[0.0, 0.5], 10.0, 10.0, 1.0).as_deref(),
            Some("0.0,9.0 10.0,5.0")
        );
    }
}
