//! What a query's filters say about the rows it can match: streams, seqs,
//! times, types, tier and day, read from the `WHERE` conjuncts DataFusion
//! hands the table. The bounds only ever *widen* what is read (every
//! filter is pushed as `Inexact`, so DataFusion applies it again above the
//! scan): a filter not understood here narrows nothing, and a rounding
//! always rounds outwards.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Microseconds in a day.
pub(crate) const DAY_US: i64 = 86_400_000_000;

/// The rows a query's filters allow, as ranges and sets (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Only these streams (None: any).
    pub streams: Option<BTreeSet<String>>,
    /// Only these types (None: any).
    pub types: Option<BTreeSet<String>>,
    /// Only these tiers, `hot`/`cold` (None: both).
    pub tiers: Option<BTreeSet<String>>,
    /// Seqs.
    pub seq: (u64, u64),
    /// `time`, microseconds since the epoch.
    pub time: (i64, i64),
    /// `received`, microseconds since the epoch.
    pub received: (i64, i64),
    /// `dt`, days since the epoch.
    pub dt: (i64, i64),
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            streams: None,
            types: None,
            tiers: None,
            seq: (0, u64::MAX),
            time: (i64::MIN, i64::MAX),
            received: (i64::MIN, i64::MAX),
            dt: (i64::MIN, i64::MAX),
        }
    }
}

/// A comparison of a column with a constant, normalised so the column is
/// on the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Cmp {
    fn of(op: Operator) -> Option<Self> {
        Some(match op {
            Operator::Eq => Self::Eq,
            Operator::Lt => Self::Lt,
            Operator::LtEq => Self::LtEq,
            Operator::Gt => Self::Gt,
            Operator::GtEq => Self::GtEq,
            _ => return None,
        })
    }

    /// `a op b` as `b op' a`.
    fn flip(self) -> Self {
        match self {
            Self::Eq => Self::Eq,
            Self::Lt => Self::Gt,
            Self::LtEq => Self::GtEq,
            Self::Gt => Self::Lt,
            Self::GtEq => Self::LtEq,
        }
    }
}

/// The column a filter constrains, through casts that keep equality
/// (a string column compared as another string type).
fn column(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) if c.field.data_type().is_string() => match c.expr.as_ref() {
            Expr::Column(col) if is_text(&col.name) => Some(col.name.as_str()),
            _ => None,
        },
        Expr::TryCast(c) if c.field.data_type().is_string() => match c.expr.as_ref() {
            Expr::Column(col) if is_text(&col.name) => Some(col.name.as_str()),
            _ => None,
        },
        _ => None,
    }
}

fn is_text(name: &str) -> bool {
    matches!(name, "stream" | "type" | "tier")
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

fn text(v: &ScalarValue) -> Option<&str> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s),
        ScalarValue::Dictionary(_, inner) => text(inner),
        _ => None,
    }
}

fn integer(v: &ScalarValue) -> Option<i128> {
    Some(match v {
        ScalarValue::Int8(Some(x)) => i128::from(*x),
        ScalarValue::Int16(Some(x)) => i128::from(*x),
        ScalarValue::Int32(Some(x)) => i128::from(*x),
        ScalarValue::Int64(Some(x)) => i128::from(*x),
        ScalarValue::UInt8(Some(x)) => i128::from(*x),
        ScalarValue::UInt16(Some(x)) => i128::from(*x),
        ScalarValue::UInt32(Some(x)) => i128::from(*x),
        ScalarValue::UInt64(Some(x)) => i128::from(*x),
        _ => return None,
    })
}

/// A timestamp constant as microseconds, rounded down (`floor`) or up.
fn micros(v: &ScalarValue, floor: bool) -> Option<i64> {
    let (x, per_us): (i64, i64) = match v {
        ScalarValue::TimestampSecond(Some(x), _) => return x.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(x), _) => return x.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(x), _) => return Some(*x),
        ScalarValue::TimestampNanosecond(Some(x), _) => (*x, 1_000),
        ScalarValue::Date32(Some(d)) => return i64::from(*d).checked_mul(DAY_US),
        _ => return None,
    };
    Some(if floor {
        x.div_euclid(per_us)
    } else {
        x.div_euclid(per_us) + i64::from(x.rem_euclid(per_us) != 0)
    })
}

fn days(v: &ScalarValue, floor: bool) -> Option<i64> {
    match v {
        ScalarValue::Date32(Some(d)) => Some(i64::from(*d)),
        ScalarValue::Date64(Some(ms)) => Some(if floor {
            ms.div_euclid(86_400_000)
        } else {
            ms.div_euclid(86_400_000) + i64::from(ms.rem_euclid(86_400_000) != 0)
        }),
        _ => None,
    }
}

/// Narrows an inclusive range by `col op value`.
fn narrow<T: Ord + Copy>(range: &mut (T, T), op: Cmp, lo: T, hi: T) {
    match op {
        Cmp::Eq => {
            range.0 = range.0.max(lo);
            range.1 = range.1.min(hi);
        }
        Cmp::Gt | Cmp::GtEq => range.0 = range.0.max(lo),
        Cmp::Lt | Cmp::LtEq => range.1 = range.1.min(hi),
    }
}

fn restrict(set: &mut Option<BTreeSet<String>>, values: BTreeSet<String>) {
    *set = Some(match set.take() {
        None => values,
        Some(s) => s.intersection(&values).cloned().collect(),
    });
}

impl Bounds {
    /// The bounds all of `filters` (conjuncts) imply together.
    pub(crate) fn from_filters(filters: &[Expr]) -> Self {
        let mut b = Self::default();
        for f in filters {
            b.apply(f);
        }
        b
    }

    /// Whether `filter` narrows anything here (then it is pushed down).
    pub(crate) fn understands(filter: &Expr) -> bool {
        let mut b = Self::default();
        b.apply(filter) && b != Self::default()
    }

    /// Whether no row can match (an empty range or set).
    pub(crate) fn is_empty(&self) -> bool {
        let set_empty = |s: &Option<BTreeSet<String>>| s.as_ref().is_some_and(BTreeSet::is_empty);
        set_empty(&self.streams)
            || set_empty(&self.types)
            || set_empty(&self.tiers)
            || self.seq.0 > self.seq.1
            || self.time.0 > self.time.1
            || self.received.0 > self.received.1
            || self.dt.0 > self.dt.1
    }

    /// Whether the rows of `tier` can match.
    pub(crate) fn wants_tier(&self, tier: &str) -> bool {
        self.tiers.as_ref().is_none_or(|t| t.contains(tier))
    }

    /// Whether rows of `stream` can match.
    pub(crate) fn wants_stream(&self, stream: &str) -> bool {
        self.streams.as_ref().is_none_or(|s| s.contains(stream))
    }

    /// Applies one conjunct; whether it was understood.
    fn apply(&mut self, e: &Expr) -> bool {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if *op == Operator::And => {
                let l = self.apply(left);
                let r = self.apply(right);
                l || r
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let Some(cmp) = Cmp::of(*op) else {
                    return false;
                };
                match (column(left), literal(right), column(right), literal(left)) {
                    (Some(c), Some(v), _, _) => self.compare(c, cmp, v),
                    (_, _, Some(c), Some(v)) => self.compare(c, cmp.flip(), v),
                    _ => false,
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => match (column(expr), literal(low), literal(high)) {
                (Some(c), Some(lo), Some(hi)) => {
                    let a = self.compare(c, Cmp::GtEq, lo);
                    let b = self.compare(c, Cmp::LtEq, hi);
                    a && b
                }
                _ => false,
            },
            Expr::InList(l) if !l.negated => {
                let Some(c) = column(&l.expr) else {
                    return false;
                };
                let values: Option<Vec<&ScalarValue>> = l.list.iter().map(literal).collect();
                let Some(values) = values else {
                    return false;
                };
                self.one_of(c, &values)
            }
            _ => false,
        }
    }

    fn one_of(&mut self, c: &str, values: &[&ScalarValue]) -> bool {
        match c {
            "stream" | "type" | "tier" => {
                let Some(set) = values
                    .iter()
                    .map(|v| text(v).map(str::to_owned))
                    .collect::<Option<BTreeSet<_>>>()
                else {
                    return false;
                };
                let target = match c {
                    "stream" => &mut self.streams,
                    "type" => &mut self.types,
                    _ => &mut self.tiers,
                };
                restrict(target, set);
                true
            }
            "seq" => {
                let Some(ints) = values
                    .iter()
                    .map(|v| integer(v))
                    .collect::<Option<Vec<_>>>()
                else {
                    return false;
                };
                let clamp = |x: i128| u64::try_from(x.max(0)).unwrap_or(u64::MAX);
                let (lo, hi) = (
                    ints.iter().copied().min().map_or(u64::MAX, clamp),
                    ints.iter().copied().max().map_or(0, clamp),
                );
                if ints.iter().all(|x| *x < 0) {
                    self.seq = (1, 0);
                } else {
                    narrow(&mut self.seq, Cmp::Eq, lo, hi);
                }
                true
            }
            _ => false,
        }
    }

    fn compare(&mut self, c: &str, op: Cmp, v: &ScalarValue) -> bool {
        match c {
            "stream" | "type" | "tier" if op == Cmp::Eq => self.one_of(c, &[v]),
            "seq" => {
                let Some(x) = integer(v) else {
                    return false;
                };
                // Exact: `seq > 5` is `seq >= 6`.
                let (lo, hi) = match op {
                    Cmp::Gt => (x + 1, x + 1),
                    Cmp::Lt => (x - 1, x - 1),
                    Cmp::Eq | Cmp::GtEq | Cmp::LtEq => (x, x),
                };
                let clamp = |x: i128| u64::try_from(x.max(0)).unwrap_or(u64::MAX);
                if hi < 0 && matches!(op, Cmp::Eq | Cmp::Lt | Cmp::LtEq) {
                    self.seq = (1, 0);
                } else {
                    narrow(&mut self.seq, op, clamp(lo), clamp(hi));
                }
                true
            }
            "time" | "received" => {
                let (Some(lo), Some(hi)) = (micros(v, true), micros(v, false)) else {
                    return false;
                };
                let range = if c == "time" {
                    &mut self.time
                } else {
                    &mut self.received
                };
                narrow(range, op, lo, hi);
                true
            }
            "dt" => {
                let (Some(lo), Some(hi)) = (days(v, true), days(v, false)) else {
                    return false;
                };
                narrow(&mut self.dt, op, lo, hi);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts(us: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn equalities_and_ranges_narrow() {
        let b = Bounds::from_filters(&[
            col("stream").eq(lit("a")),
            col("seq").gt(lit(5i64)),
            lit(20i64).gt_eq(col("seq")),
            col("type").in_list(vec![lit("x"), lit("y")], false),
            col("time").between(ts(10), ts(20)),
            col("tier").eq(lit("cold")),
        ]);
        assert_eq!(b.streams, Some(BTreeSet::from(["a".to_owned()])));
        assert_eq!(b.seq, (6, 20));
        assert_eq!(b.types.as_ref().map(BTreeSet::len), Some(2));
        assert_eq!(b.time, (10, 20));
        assert!(b.wants_tier("cold") && !b.wants_tier("hot"));
        assert!(!b.is_empty());
    }

    #[test]
    fn contradictions_are_empty_and_unknown_filters_narrow_nothing() {
        let b = Bounds::from_filters(&[col("stream").eq(lit("a")), col("stream").eq(lit("b"))]);
        assert!(b.is_empty());
        let b = Bounds::from_filters(&[col("seq").lt(lit(1i64))]);
        assert_eq!(
            b.seq,
            (0, 0),
            "seq < 1 leaves only seq 0, which no event has"
        );
        let b = Bounds::from_filters(&[col("seq").lt(lit(-3i64))]);
        assert!(b.is_empty());
        let b = Bounds::from_filters(&[col("stream").not_eq(lit("a")), col("data").eq(lit("x"))]);
        assert_eq!(b, Bounds::default());
        assert!(!Bounds::understands(&col("actor").eq(lit("u"))));
        assert!(Bounds::understands(&col("seq").lt_eq(lit(3i64))));
        let or = col("stream").eq(lit("a")).or(col("seq").eq(lit(1i64)));
        assert!(!Bounds::understands(&or), "an OR narrows nothing here");
    }

    #[test]
    fn nanosecond_bounds_round_outwards() {
        let ns = |x: i64| lit(ScalarValue::TimestampNanosecond(Some(x), None));
        let b = Bounds::from_filters(&[col("time").gt(ns(1_500)), col("time").lt(ns(2_500))]);
        assert_eq!(b.time, (1, 3), "1.5 µs rounds down, 2.5 µs up");
        let b = Bounds::from_filters(&[col("received").eq(ns(-1_500))]);
        assert_eq!(b.received, (-2, -1));
    }
}
