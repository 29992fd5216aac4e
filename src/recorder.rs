//! A small in-process recorder for the `metrics` facade: keeps every counter, gauge and
//! histogram prost-db emits, so that the shop example can print them and tests can assert
//! on them. A service would install an exporter (Prometheus, OpenTelemetry) instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// Every series recorded so far, keyed by name and labels.
///
/// ```
/// use prost_shop::recorder::MemoryRecorder;
///
/// let recorder = MemoryRecorder::default();
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!("jobs_total", "queue" => "a").increment(2);
///     metrics::counter!("jobs_total", "queue" => "b").increment(1);
/// });
/// assert_eq!(recorder.counter("jobs_total", &[("queue", "a")]), 2);
/// assert_eq!(recorder.counter("jobs_total", &[]), 3);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryRecorder {
    series: Arc<Mutex<BTreeMap<Series, Stored>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Stored {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Samples>),
}

#[derive(Debug, Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(value);
    }
}

impl MemoryRecorder {
    /// Makes this the process's recorder (once per process).
    ///
    /// # Errors
    ///
    /// If a recorder is already installed.
    pub fn install(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        metrics::set_global_recorder(self.clone()).map_err(|e| e.to_string().into())
    }

    /// The sum of the counters named `name` whose labels include `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .into_iter()
            .filter_map(|stored| match stored {
                Stored::Counter(value) => Some(value.load(Ordering::Relaxed)),
                _ => None,
            })
            .sum()
    }

    /// The last value of the gauge named `name` with `labels`, if one was set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .into_iter()
            .find_map(|stored| match stored {
                Stored::Gauge(bits) => Some(f64::from_bits(bits.load(Ordering::Relaxed))),
                _ => None,
            })
    }

    /// Every value recorded in the histograms named `name` whose labels include `labels`.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(name, labels)
            .into_iter()
            .filter_map(|stored| match stored {
                Stored::Histogram(samples) => {
                    Some(samples.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
                }
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// One line per series: counters and gauges with their value, histograms with count,
    /// p50, p99 and max.
    pub fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (key, stored) in series.iter() {
            let labels: Vec<String> = key.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let name = format!("{}{{{}}}", key.name, labels.join(","));
            let _ = match stored {
                Stored::Counter(value) => {
                    writeln!(out, "{name:<90} {}", value.load(Ordering::Relaxed))
                }
                Stored::Gauge(bits) => writeln!(
                    out,
                    "{name:<90} {:.3}",
                    f64::from_bits(bits.load(Ordering::Relaxed))
                ),
                Stored::Histogram(samples) => {
                    let mut values = samples.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    values.sort_by(f64::total_cmp);
                    let at = |q: f64| {
                        values
                            .get(((values.len().saturating_sub(1)) as f64 * q).round() as usize)
                            .copied()
                            .unwrap_or(0.0)
                    };
                    writeln!(
                        out,
                        "{name:<90} count {} p50 {:.4} p99 {:.4} max {:.4}",
                        values.len(),
                        at(0.5),
                        at(0.99),
                        at(1.0)
                    )
                }
            };
        }
        out
    }

    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Stored> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series
            .iter()
            .filter(|(key, _)| {
                key.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, stored)| stored.clone())
            .collect()
    }

    fn register(&self, key: &Key, make: impl FnOnce() -> Stored) -> Stored {
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|label| (label.key().to_owned(), label.value().to_owned()))
            .collect();
        labels.sort();
        let series = Series {
            name: key.name().to_owned(),
            labels,
        };
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(series)
            .or_insert_with(make)
            .clone()
    }
}

impl Recorder for MemoryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        match self.register(key, || Stored::Counter(Arc::default())) {
            Stored::Counter(value) => Counter::from_arc(value),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        match self.register(key, || Stored::Gauge(Arc::default())) {
            Stored::Gauge(value) => Gauge::from_arc(value),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match self.register(key, || Stored::Histogram(Arc::default())) {
            Stored::Histogram(samples) => Histogram::from_arc(samples),
            _ => Histogram::noop(),
        }
    }
}
