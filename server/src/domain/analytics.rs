//! Pure pieces of analytics: time buckets with empty ones filled in, and statistics of one
//! field over a set of states.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::DomainError;

/// Most buckets one time series may have.
pub const MAX_BUCKETS: i64 = 10_000;

/// Checks an interval and range and returns how many buckets they make.
pub fn bucket_count(
    interval_micros: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<i64, DomainError> {
    if interval_micros <= 0 {
        return Err(DomainError::invalid(
            "interval",
            format!("must be positive, got {interval_micros} microseconds"),
        ));
    }
    if start >= end {
        return Err(DomainError::invalid(
            "start_time",
            format!(
                "{} is not before end_time {}",
                start.to_rfc3339(),
                end.to_rfc3339()
            ),
        ));
    }
    let span = (end - start)
        .num_microseconds()
        .ok_or_else(|| DomainError::invalid("end_time", "the range is too long"))?;
    let buckets = (span + interval_micros - 1) / interval_micros;
    if buckets > MAX_BUCKETS {
        return Err(DomainError::invalid(
            "interval",
            format!(
                "makes {buckets} buckets over this range, more than {MAX_BUCKETS}: widen the interval or narrow the range"
            ),
        ));
    }
    Ok(buckets)
}

/// Every bucket of the range in order, with the counts of `found` and zero elsewhere.
pub fn fill_buckets(
    interval_micros: i64,
    start: DateTime<Utc>,
    buckets: i64,
    found: &[(DateTime<Utc>, i64)],
) -> Vec<(DateTime<Utc>, i64)> {
    let counts: HashMap<DateTime<Utc>, i64> = found.iter().copied().collect();
    (0..buckets)
        .map(|k| {
            let at = start + Duration::microseconds(k * interval_micros);
            (at, counts.get(&at).copied().unwrap_or(0))
        })
        .collect()
}

/// Statistics of one field over many states.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldStats {
    /// States that have the field (a JSON null counts as present).
    pub count: i64,
    /// States that lack it.
    pub missing: i64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: Option<f64>,
    pub mean: Option<f64>,
    /// Most frequent string and boolean values, most frequent first, ties by value's JSON text.
    pub top_values: Vec<(Value, i64)>,
}

impl FieldStats {
    /// Computes the statistics of `values` (None = field absent), keeping `top` frequent values.
    pub fn from_values<'a>(
        values: impl IntoIterator<Item = Option<&'a Value>>,
        top: usize,
    ) -> Self {
        let mut acc = FieldStatsAccumulator::default();
        for value in values {
            acc.add(value);
        }
        acc.finish(top)
    }
}

/// [`FieldStats`] built one value at a time, so a caller streaming many states keeps only the
/// running totals (and the distinct string and boolean values), never the values themselves.
#[derive(Debug, Clone, Default)]
pub struct FieldStatsAccumulator {
    stats: FieldStats,
    numbers: i64,
    frequency: HashMap<String, (Value, i64)>,
}

impl FieldStatsAccumulator {
    /// Counts one state's value of the field (None = the state lacks it).
    pub fn add(&mut self, value: Option<&Value>) {
        let stats = &mut self.stats;
        let Some(value) = value else {
            stats.missing += 1;
            return;
        };
        stats.count += 1;
        match value {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                self.numbers += 1;
                stats.min = Some(stats.min.map_or(x, |m| m.min(x)));
                stats.max = Some(stats.max.map_or(x, |m| m.max(x)));
                stats.sum = Some(stats.sum.unwrap_or(0.0) + x);
            }
            Value::String(_) | Value::Bool(_) => {
                self.frequency
                    .entry(value.to_string())
                    .or_insert_with(|| (value.clone(), 0))
                    .1 += 1;
            }
            _ => {}
        }
    }

    /// The statistics so far, keeping the `top` most frequent values.
    pub fn finish(self, top: usize) -> FieldStats {
        let mut stats = self.stats;
        if self.numbers > 0 {
            stats.mean = stats.sum.map(|s| s / self.numbers as f64);
        }
        let mut ranked: Vec<(String, (Value, i64))> = self.frequency.into_iter().collect();
        ranked.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
        stats.top_values = ranked.into_iter().take(top).map(|(_, v)| v).collect();
        stats
    }
}

/// The segments of a JSON pointer, unescaped (`/a~1b/c` -> `["a/b", "c"]`).
pub fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_are_counted_and_bounded() {
        let hour = 3_600_000_000;
        assert_eq!(
            bucket_count(hour, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).unwrap(),
            24
        );
        assert_eq!(
            bucket_count(hour, t("2026-01-01T00:00:00Z"), t("2026-01-01T01:00:01Z")).unwrap(),
            2
        );
        assert!(bucket_count(0, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).is_err());
        assert!(bucket_count(-5, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z")).is_err());
        assert!(bucket_count(hour, t("2026-01-02T00:00:00Z"), t("2026-01-01T00:00:00Z")).is_err());
        let err = bucket_count(
            1_000_000,
            t("2026-01-01T00:00:00Z"),
            t("2026-02-01T00:00:00Z"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("buckets"), "{err}");
    }

    #[test]
    fn empty_buckets_are_zero() {
        let hour = 3_600_000_000;
        let start = t("2026-01-01T00:00:00Z");
        let filled = fill_buckets(hour, start, 3, &[(t("2026-01-01T01:00:00Z"), 7)]);
        assert_eq!(
            filled,
            vec![
                (start, 0),
                (t("2026-01-01T01:00:00Z"), 7),
                (t("2026-01-01T02:00:00Z"), 0)
            ]
        );
    }

    #[test]
    fn field_stats_cover_numbers_strings_and_absence() {
        let values = [
            json!(1),
            json!(2.5),
            json!("a"),
            json!("a"),
            json!(true),
            json!(null),
            json!("b"),
        ];
        let mut all: Vec<Option<&Value>> = values.iter().map(Some).collect();
        all.push(None);
        let stats = FieldStats::from_values(all, 2);
        assert_eq!(stats.count, 7);
        assert_eq!(stats.missing, 1);
        assert_eq!(stats.min, Some(1.0));
        assert_eq!(stats.max, Some(2.5));
        assert_eq!(stats.sum, Some(3.5));
        assert_eq!(stats.mean, Some(1.75));
        assert_eq!(stats.top_values, vec![(json!("a"), 2), (json!("b"), 1)]);
    }

    #[test]
    fn pointer_segments_unescape() {
        assert_eq!(pointer_segments("/a~1b/c~0/0"), vec!["a/b", "c~", "0"]);
    }
}
