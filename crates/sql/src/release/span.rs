//! `__tessera_span_reached(ts)`: whether a group's readings span at least the policy's
//! `min_span`, the test [`super`] adds to a constrained aggregate.
//!
//! It answers exactly what `max(ts) - min(ts) >= span` answers, at a fraction of the cost of
//! two extra aggregates: a group's span only grows as readings arrive, so once it reaches the
//! policy the group is settled and the accumulator skips its remaining readings (one flag read
//! per reading instead of two compares and stores). The first and last times it keeps are
//! always those of real readings of the group, so a partial state merged from several
//! partitions never overstates the span: a group passes only when two of its own readings lie
//! `span` apart. Timestamps arrive as `Int64` (the caller casts `ts`, which reinterprets the
//! buffer without copying); null timestamps count for nothing.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The aggregate's name in plans (EXPLAIN shows it).
pub(super) const SPAN_REACHED: &str = "__tessera_span_reached";

/// Whether a group's event times reach `span` (in the timestamp's own unit).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(super) struct SpanReached {
    span: i64,
    signature: Signature,
}

impl SpanReached {
    /// The aggregate for `span` units of event time, ready to put in a plan.
    pub(super) fn udaf(span: i64) -> Arc<AggregateUDF> {
        Arc::new(AggregateUDF::from(Self {
            span,
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }))
    }
}

impl AggregateUDFImpl for SpanReached {
    fn name(&self) -> &str {
        SPAN_REACHED
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(format_state_name(args.name, "first"), DataType::Int64, true)),
            Arc::new(Field::new(format_state_name(args.name, "last"), DataType::Int64, true)),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SpanAccumulator { span: self.span, times: None }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SpanGroups::new(self.span)))
    }
}

/// Whether `first..=last` reaches `span` (saturating: extreme times cannot wrap around).
fn reaches(first: i64, last: i64, span: i64) -> bool {
    last.saturating_sub(first) >= span
}

/// One group's first and last time, for plans that aggregate row by row.
#[derive(Debug)]
struct SpanAccumulator {
    span: i64,
    times: Option<(i64, i64)>,
}

impl SpanAccumulator {
    fn add(&mut self, first: i64, last: i64) {
        self.times = Some(match self.times {
            Some((f, l)) => (f.min(first), l.max(last)),
            None => (first, last),
        });
    }
}

impl Accumulator for SpanAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        values[0].as_primitive::<Int64Type>().iter().flatten().for_each(|t| self.add(t, t));
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (first, last) = (states[0].as_primitive::<Int64Type>(), states[1].as_primitive::<Int64Type>());
        first.iter().zip(last.iter()).for_each(|pair| {
            if let (Some(f), Some(l)) = pair {
                self.add(f, l)
            }
        });
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (first, last) = self.times.unzip();
        Ok(vec![ScalarValue::Int64(first), ScalarValue::Int64(last)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Boolean(Some(self.times.is_some_and(|(f, l)| reaches(f, l, self.span)))))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }
}

/// Every group's first and last time, and whether it has reached the span (then it is settled).
/// A group with no reading yet has `first > last`. When every group is settled a batch of
/// readings of known groups changes nothing and is skipped whole.
#[derive(Debug, Default)]
struct SpanGroups {
    span: i64,
    first: Vec<i64>,
    last: Vec<i64>,
    reached: Vec<bool>,
    settled: usize,
}

impl SpanGroups {
    fn grow(&mut self, total_num_groups: usize) {
        self.first.resize(total_num_groups, i64::MAX);
        self.last.resize(total_num_groups, i64::MIN);
        self.reached.resize(total_num_groups, false);
    }

    fn new(span: i64) -> Self {
        Self { span, ..Self::default() }
    }

    /// Whether no reading of the first `total_num_groups` groups can change anything.
    fn all_settled(&self, total_num_groups: usize) -> bool {
        self.settled == total_num_groups
    }

    fn add(&mut self, group: usize, first: i64, last: i64) {
        let (f, l) = (self.first[group].min(first), self.last[group].max(last));
        self.first[group] = f;
        self.last[group] = l;
        if reaches(f, l, self.span) {
            self.reached[group] = true;
            self.settled += 1;
        }
    }

    fn times(&mut self, emit_to: EmitTo) -> (Vec<i64>, Vec<i64>, Vec<bool>) {
        let taken = (
            emit_to.take_needed(&mut self.first),
            emit_to.take_needed(&mut self.last),
            emit_to.take_needed(&mut self.reached),
        );
        self.settled = self.reached.iter().filter(|&&r| r).count();
        taken
    }
}

impl GroupsAccumulator for SpanGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        if self.all_settled(total_num_groups) {
            return Ok(());
        }
        let times = values[0].as_primitive::<Int64Type>();
        if times.null_count() == 0 && opt_filter.is_none() {
            // The common case, kept tight: one flag per reading once its group is settled.
            for (&group, &t) in group_indices.iter().zip(times.values().iter()) {
                if !self.reached[group] {
                    self.add(group, t, t);
                }
            }
            return Ok(());
        }
        for (row, &group) in group_indices.iter().enumerate() {
            let counted = opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
            if counted && !self.reached[group] && times.is_valid(row) {
                let t = times.value(row);
                self.add(group, t, t);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (_, _, reached) = self.times(emit_to);
        Ok(Arc::new(BooleanArray::from(reached)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (first, last, _) = self.times(emit_to);
        let seen = |(i, t): (usize, &i64)| (first[i] <= last[i]).then_some(*t);
        let first_state: Int64Array = first.iter().enumerate().map(seen).collect();
        let last_state: Int64Array = last.iter().enumerate().map(seen).collect();
        Ok(vec![Arc::new(first_state), Arc::new(last_state)])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.grow(total_num_groups);
        if self.all_settled(total_num_groups) {
            return Ok(());
        }
        let (first, last) = (values[0].as_primitive::<Int64Type>(), values[1].as_primitive::<Int64Type>());
        for (row, &group) in group_indices.iter().enumerate() {
            if !self.reached[group] && first.is_valid(row) && last.is_valid(row) {
                self.add(group, first.value(row), last.value(row));
            }
        }
        Ok(())
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let times = values[0].as_primitive::<Int64Type>();
        let state: ArrayRef = match opt_filter {
            None => Arc::clone(&values[0]),
            Some(filter) => Arc::new(
                times
                    .iter()
                    .enumerate()
                    .map(|(row, t)| t.filter(|_| filter.is_valid(row) && filter.value(row)))
                    .collect::<Int64Array>(),
            ),
        };
        Ok(vec![Arc::clone(&state), state])
    }

    fn size(&self) -> usize {
        self.first.capacity() * 8 + self.last.capacity() * 8 + self.reached.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(values.iter().copied().collect::<Int64Array>())
    }

    fn reached(array: ArrayRef) -> Vec<bool> {
        array.as_boolean().iter().map(|b| b.expect("never null")).collect()
    }

    #[test]
    fn a_group_passes_exactly_when_two_of_its_readings_are_span_apart() {
        let mut groups = SpanGroups::new(60);
        // Group 0 spans 60 (passes), group 1 spans 59, group 2 has one reading, group 3 none.
        let values = times(&[Some(100), Some(0), Some(130), Some(59), Some(160), Some(5)]);
        groups.update_batch(&[values], &[0, 1, 0, 1, 0, 2], None, 4).expect("update");
        assert_eq!(reached(groups.evaluate(EmitTo::All).expect("evaluate")), [true, false, false, false]);
    }

    #[test]
    fn nulls_and_filtered_rows_count_for_nothing() {
        let mut groups = SpanGroups::new(10);
        let values = times(&[Some(0), None, Some(50), Some(0), Some(50)]);
        let filter = BooleanArray::from(vec![Some(true), Some(true), Some(true), Some(true), None]);
        groups.update_batch(&[values], &[0, 0, 0, 1, 1], Some(&filter), 2).expect("update");
        assert_eq!(reached(groups.evaluate(EmitTo::All).expect("evaluate")), [true, false]);
    }

    #[test]
    fn partial_states_merge_without_overstating_the_span() {
        // Two partitions each see part of a group; neither alone reaches 100, together they do.
        let mut left = SpanGroups::new(100);
        left.update_batch(&[times(&[Some(0), Some(40)])], &[0, 0], None, 2).expect("update");
        let mut right = SpanGroups::new(100);
        right.update_batch(&[times(&[Some(60), Some(100), Some(7)])], &[0, 0, 1], None, 2).expect("update");
        let mut last = SpanGroups::new(100);
        for partial in [&mut left, &mut right] {
            let state = partial.state(EmitTo::All).expect("state");
            last.merge_batch(&state, &[0, 1], 2).expect("merge");
        }
        assert_eq!(reached(last.evaluate(EmitTo::All).expect("evaluate")), [true, false]);
        // A group one partition saw nothing of stays unseen there, not a 0..0 span.
        let mut empty = SpanGroups::new(0);
        empty.grow(1);
        let state = empty.state(EmitTo::All).expect("state");
        assert_eq!(state[0].null_count(), 1);
    }

    #[test]
    fn settled_groups_skip_batches_but_a_new_group_is_still_measured() {
        let mut groups = SpanGroups::new(10);
        groups.update_batch(&[times(&[Some(0), Some(10)])], &[0, 0], None, 1).expect("update");
        assert!(groups.all_settled(1));
        // Group 1 appears with the batch that names it; group 0's readings change nothing.
        groups.update_batch(&[times(&[Some(-50), Some(3), Some(20)])], &[0, 1, 1], None, 2).expect("update");
        assert!(groups.all_settled(2));
        groups.update_batch(&[times(&[Some(5)])], &[2], None, 3).expect("update");
        assert!(!groups.all_settled(3));
        // Emitting the first two groups leaves the third unsettled, renumbered 0.
        assert_eq!(reached(groups.evaluate(EmitTo::First(2)).expect("evaluate")), [true, true]);
        assert!(!groups.all_settled(1));
        groups.update_batch(&[times(&[Some(15)])], &[0], None, 1).expect("update");
        assert_eq!(reached(groups.evaluate(EmitTo::All).expect("evaluate")), [true]);
    }

    #[test]
    fn extreme_times_do_not_wrap_around() {
        let mut one = SpanAccumulator { span: 10, times: None };
        one.update_batch(&[times(&[Some(i64::MIN), Some(i64::MAX)])]).expect("update");
        assert_eq!(one.evaluate().expect("evaluate"), ScalarValue::Boolean(Some(true)));
        let mut none = SpanAccumulator { span: 0, times: None };
        none.update_batch(&[times(&[None])]).expect("update");
        assert_eq!(none.evaluate().expect("evaluate"), ScalarValue::Boolean(Some(false)));
    }
}
