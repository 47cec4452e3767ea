//! Destination lag for the Destinations page's charts: every destination's
//! lag per stream, sampled every [`EVERY`] by a background task that holds
//! the server's state only weakly (as [`super::rates`] does for ingest).
//! Kept per stream, so each viewer's chart sums only the streams it sees.
//! History starts when the process does; nothing is stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use crate::api::{AppState, Shared};
use crate::auth::sees;
use crate::store::KeyRecord;

use super::rates::EVERY;

/// Samples kept per destination (10 minutes).
const KEEP: usize = 61;

/// One sample: per stream, events behind and the oldest undelivered
/// event's age (seconds).
type Sample = Vec<(String, u64, Option<f64>)>;

/// Per destination, its samples, oldest first.
#[derive(Clone, Default)]
pub(super) struct Lags {
    samples: Arc<Mutex<HashMap<String, VecDeque<Sample>>>>,
}

impl Lags {
    /// Starts sampling `app`'s destinations.
    pub(super) fn start(app: &AppState) -> Self {
        let lags = Lags::default();
        let weak: Weak<Shared> = Arc::downgrade(app);
        let samples = lags.samples.clone();
        if app.destinations.is_empty() {
            return lags;
        }
        // Outside a runtime (a router built in a plain test) there is no
        // sampling: the charts stay empty.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut tick = tokio::time::interval(EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let Some(app) = weak.upgrade() else { return };
                    let mut taken = Vec::new();
                    for d in &app.destinations {
                        let name = &d.config.driver.name;
                        if let Ok(l) = crate::destinations::lags(
                            app.store.as_ref(),
                            name,
                            &d.config.driver.filter,
                        )
                        .await
                        {
                            let sample: Sample = l
                                .into_iter()
                                .map(|l| (l.stream, l.lag_events, l.lag_seconds))
                                .collect();
                            taken.push((name.clone(), sample));
                        }
                    }
                    drop(app);
                    let mut s = samples
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (name, sample) in taken {
                        let q = s.entry(name).or_default();
                        if q.len() == KEEP {
                            q.pop_front();
                        }
                        q.push_back(sample);
                    }
                }
            });
        }
        lags
    }

    /// Destination `name`'s lag over the streams `key` sees, oldest first:
    /// events behind (summed) and seconds behind (the worst stream).
    pub(super) fn series(&self, name: &str, key: &KeyRecord) -> Vec<(u64, f64)> {
        let s = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.get(name)
            .map(|q| {
                q.iter()
                    .map(|sample| {
                        sample
                            .iter()
                            .filter(|(stream, _, _)| sees(key, stream))
                            .fold((0, 0.0_f64), |(e, w), (_, events, secs)| {
                                (e + events, w.max(secs.unwrap_or(0.0)))
                            })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An inline SVG chart of lag in seconds (presentation attributes only:
/// the CSP allows no inline style), with a text equivalent.
pub(super) fn chart(series: &[(u64, f64)]) -> maud::Markup {
    let label = match series.last() {
        None => "no samples yet (one every 10 s)".to_owned(),
        Some((events, secs)) => format!(
            "{events} events and {} behind now; at most {} over the last {} minutes",
            super::ops::secs(*secs),
            super::ops::secs(series.iter().map(|s| s.1).fold(0.0, f64::max)),
            (series.len() as u64 * EVERY.as_secs()).div_ceil(60)
        ),
    };
    let secs: Vec<f64> = series.iter().map(|s| s.1).collect();
    let points = super::rates::points(&secs, 160.0, 32.0, 1.0);
    maud::html! {
        span class="spark" {
            svg width="160" height="32" viewBox="0 0 160 32" role="img" aria-label=(label) {
                title { (label) }
                line x1="0" y1="31" x2="160" y2="31" stroke="currentColor" stroke-opacity="0.3" stroke-width="1" {}
                @if let Some(p) = &points {
                    polyline points=(p) fill="none" stroke="currentColor" stroke-width="1.5" {}
                }
            }
            span class="visually-hidden" { (label) }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(stream: &str) -> KeyRecord {
        KeyRecord {
            id: "k".into(),
            secret_hash: [0; 32],
            scope: "read".into(),
            stream: stream.into(),
            created: String::new(),
            revoked: None,
        }
    }

    #[test]
    fn a_viewer_sees_the_lag_of_its_streams_only() {
        let lags = Lags::default();
        lags.samples.lock().unwrap().insert(
            "hook".into(),
            VecDeque::from([
                vec![("a".into(), 5, Some(2.0)), ("b".into(), 7, Some(9.0))],
                vec![("a".into(), 0, None), ("b".into(), 1, Some(1.0))],
            ]),
        );
        assert_eq!(lags.series("hook", &key("*")), vec![(12, 9.0), (1, 1.0)]);
        assert_eq!(lags.series("hook", &key("a")), vec![(5, 2.0), (0, 0.0)]);
        assert!(lags.series("other", &key("*")).is_empty());
        let svg = chart(&lags.series("hook", &key("a"))).into_string();
        assert!(svg.contains("0 events and 0 s behind now"), "{svg}");
        assert!(!svg.contains("style="), "no inline style: {svg}");
    }
}
