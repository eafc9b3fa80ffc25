//! Which grade each column of each stream has: the [`GradeMap`].
//!
//! A *stream* is a table of rows Tessera produces (`telemetry`, `motor_windows`, `alerts`,
//! `late_events`, ...). Each stream has a default grade and per-column overrides. Grades come
//! from the node's config and from the cluster's replicated policy; where both name a column,
//! the higher grade wins ([`GradeMap::raise`]): data is protected at the highest level anyone
//! asked for. A stream nobody graded is treated as `core`.
//!
//! Grades travel with the data as Arrow field metadata under [`GRADE_METADATA_KEY`]
//! ([`GradeMap::annotate`]), so a Parquet segment or a query result says how it must be handled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_schema::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::{Channel, DataGrade};

/// The Arrow field (and schema) metadata key holding a grade's name.
pub const GRADE_METADATA_KEY: &str = "tessera.grade";

/// The grades of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamGrades {
    /// The grade of every column not named in `columns` (`None`: not set here, so `core`
    /// unless a map it is raised into says otherwise).
    #[serde(default)]
    pub default: Option<DataGrade>,
    /// Per-column grades.
    #[serde(default)]
    pub columns: BTreeMap<String, DataGrade>,
}

/// Grades of every stream's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GradeMap {
    streams: BTreeMap<String, StreamGrades>,
}

impl Default for GradeMap {
    fn default() -> Self {
        Self::builtin()
    }
}

impl GradeMap {
    /// No stream graded: everything is `core`.
    pub fn empty() -> Self {
        Self { streams: BTreeMap::new() }
    }

    /// Tessera's defaults. Raw telemetry: identities and time `general`, electrical, thermal
    /// and speed channels `important`, the vibration signature (the machine's fingerprint) and
    /// free-form extras `core`. Windows: keys `general`, values `important`. Alerts and the
    /// registry: `general`. Late events are raw readings, graded like telemetry.
    pub fn builtin() -> Self {
        use DataGrade::*;
        let telemetry = || {
            let mut columns: BTreeMap<String, DataGrade> =
                ["motor_id", "site_id", "ts", "seq"].iter().map(|c| (c.to_string(), General)).collect();
            for c in Channel::ALL {
                let grade = if c.name().starts_with("vibration") { Core } else { Important };
                columns.insert(c.name().to_string(), grade);
            }
            columns.insert("extra".into(), Core);
            StreamGrades { default: Some(Important), columns }
        };
        let keys = |names: &[&str], default| StreamGrades {
            default: Some(default),
            columns: names.iter().map(|c| (c.to_string(), General)).collect(),
        };
        let mut late = telemetry();
        late.columns
            .extend(["window", "window_start", "window_end", "reason"].iter().map(|c| (c.to_string(), General)));
        let streams = BTreeMap::from([
            ("telemetry".to_string(), telemetry()),
            ("late_events".to_string(), late),
            (
                "motor_windows".to_string(),
                keys(&["query", "motor_id", "site_id", "window_start", "window_end"], Important),
            ),
            ("alerts".to_string(), StreamGrades { default: Some(General), columns: BTreeMap::new() }),
            (
                // Status and why are general (a fleet view's colours); the scores behind them
                // are window values, important as in motor_windows.
                "motor_health".to_string(),
                keys(
                    &["motor_id", "site_id", "status", "score_query", "reasons", "alerts_open", "last_reading"],
                    Important,
                ),
            ),
            ("continuous_queries".to_string(), StreamGrades { default: Some(General), columns: BTreeMap::new() }),
            ("sites".to_string(), StreamGrades { default: Some(General), columns: BTreeMap::new() }),
            ("motors".to_string(), StreamGrades { default: Some(General), columns: BTreeMap::new() }),
            ("partitions".to_string(), StreamGrades { default: Some(General), columns: BTreeMap::new() }),
            ("query_audit".to_string(), StreamGrades { default: Some(Important), columns: BTreeMap::new() }),
        ]);
        Self { streams }
    }

    /// The grade of `column` of `stream`.
    pub fn grade(&self, stream: &str, column: &str) -> DataGrade {
        match self.streams.get(stream) {
            Some(s) => s.columns.get(column).copied().or(s.default).unwrap_or(DataGrade::Core),
            None => DataGrade::Core,
        }
    }

    /// The grades of `stream`, if graded.
    pub fn stream(&self, stream: &str) -> Option<&StreamGrades> {
        self.streams.get(stream)
    }

    /// Every graded stream.
    pub fn streams(&self) -> impl Iterator<Item = (&str, &StreamGrades)> {
        self.streams.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets a stream's default grade (`column` `None`) or one column's grade.
    pub fn set(&mut self, stream: &str, column: Option<&str>, grade: DataGrade) {
        let s = self
            .streams
            .entry(stream.to_string())
            .or_insert_with(|| StreamGrades { default: None, columns: BTreeMap::new() });
        match column {
            None => s.default = Some(grade),
            Some(c) => {
                s.columns.insert(c.to_string(), grade);
            }
        }
    }

    /// Raises every grade to at least what `other` says (a stream or column `other` grades
    /// higher is taken from it; nothing is lowered).
    pub fn raise(&mut self, other: &GradeMap) {
        for (name, theirs) in &other.streams {
            match self.streams.get_mut(name) {
                None => {
                    self.streams.insert(name.clone(), theirs.clone());
                }
                Some(ours) => {
                    let old_default = ours.default.unwrap_or(DataGrade::Core);
                    // Columns they name are raised to their grade (a column that followed our
                    // default keeps that default as its floor).
                    for (column, grade) in &theirs.columns {
                        let current = ours.columns.get(column).copied().unwrap_or(old_default);
                        ours.columns.insert(column.clone(), current.max(*grade));
                    }
                    // Their default raises our default and every column they do not name.
                    if let Some(their_default) = theirs.default {
                        ours.default = Some(old_default.max(their_default));
                        for (column, grade) in ours.columns.iter_mut() {
                            if !theirs.columns.contains_key(column) {
                                *grade = (*grade).max(their_default);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `schema` with each field's grade (of `stream`) in its metadata, and the highest grade
    /// among them in the schema's metadata.
    pub fn annotate(&self, stream: &str, schema: &Schema) -> SchemaRef {
        let mut highest = DataGrade::General;
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let grade = self.grade(stream, f.name());
                highest = highest.max(grade);
                with_grade(f, grade)
            })
            .collect();
        let mut metadata = schema.metadata().clone();
        metadata.insert(GRADE_METADATA_KEY.to_string(), highest.name().to_string());
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }
}

/// The grades a running node applies: its config's, raised by the cluster's replicated
/// policy as that changes. Cheap to clone; every clone sees the same current map.
#[derive(Debug, Clone)]
pub struct LiveGrades {
    config: GradeMap,
    current: Arc<std::sync::RwLock<Arc<GradeMap>>>,
}

impl LiveGrades {
    /// Starts at `config`.
    pub fn new(config: GradeMap) -> Self {
        let current = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
        Self { config, current }
    }

    /// The grades as of now.
    pub fn current(&self) -> Arc<GradeMap> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies the cluster's `policy`: the config's grades raised by it (a policy can raise a
    /// grade above the config, never below). Returns whether anything changed.
    pub fn apply_policy(&self, policy: &GradeMap) -> bool {
        let mut next = self.config.clone();
        next.raise(policy);
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if **current == next {
            return false;
        }
        *current = Arc::new(next);
        true
    }
}

/// `field` with `grade` in its metadata.
pub fn with_grade(field: &Field, grade: DataGrade) -> Field {
    let mut metadata: HashMap<String, String> = field.metadata().clone();
    metadata.insert(GRADE_METADATA_KEY.to_string(), grade.name().to_string());
    field.clone().with_metadata(metadata)
}

/// The grade a field's metadata carries, if any.
pub fn field_grade(field: &Field) -> Option<DataGrade> {
    field.metadata().get(GRADE_METADATA_KEY).and_then(|g| g.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry_schema;

    #[test]
    fn builtin_grades_raw_vibration_core_and_ids_general() {
        let g = GradeMap::builtin();
        assert_eq!(g.grade("telemetry", "motor_id"), DataGrade::General);
        assert_eq!(g.grade("telemetry", "current_a"), DataGrade::Important);
        assert_eq!(g.grade("telemetry", "vibration_x_rms"), DataGrade::Core);
        assert_eq!(g.grade("motor_windows", "window_start"), DataGrade::General);
        assert_eq!(g.grade("motor_windows", "z_current"), DataGrade::Important);
        assert_eq!(g.grade("nobody_graded_this", "x"), DataGrade::Core);
    }

    #[test]
    fn a_policy_raises_live_grades_and_a_later_policy_replaces_it() {
        let live = LiveGrades::new(GradeMap::builtin());
        let seen_by_sql = live.clone();
        let mut policy = GradeMap::empty();
        policy.set("telemetry", Some("temperature_c"), DataGrade::Core);
        policy.set("telemetry", Some("vibration_x_rms"), DataGrade::General);
        assert!(live.apply_policy(&policy));
        assert_eq!(seen_by_sql.current().grade("telemetry", "temperature_c"), DataGrade::Core);
        assert_eq!(seen_by_sql.current().grade("telemetry", "vibration_x_rms"), DataGrade::Core, "never below config");
        assert!(!live.apply_policy(&policy), "nothing changed");
        assert!(live.apply_policy(&GradeMap::empty()));
        assert_eq!(seen_by_sql.current().grade("telemetry", "temperature_c"), DataGrade::Important, "back to config");
    }

    #[test]
    fn raising_never_lowers_a_grade() {
        let mut ours = GradeMap::builtin();
        let mut theirs = GradeMap::empty();
        theirs.set("telemetry", Some("temperature_c"), DataGrade::Core);
        theirs.set("telemetry", Some("vibration_x_rms"), DataGrade::General);
        theirs.set("alerts", None, DataGrade::Important);
        theirs.set("motor_windows", None, DataGrade::Core);
        ours.raise(&theirs);
        assert_eq!(ours.grade("telemetry", "temperature_c"), DataGrade::Core);
        assert_eq!(ours.grade("telemetry", "vibration_x_rms"), DataGrade::Core, "a lower policy does not lower it");
        assert_eq!(ours.grade("alerts", "motor_id"), DataGrade::Important);
        // Naming one column raises nothing else; a default raises every column.
        assert_eq!(ours.grade("telemetry", "motor_id"), DataGrade::General);
        assert_eq!(ours.grade("motor_windows", "motor_id"), DataGrade::Core);
    }

    #[test]
    fn annotated_schema_carries_each_grade_and_the_highest() {
        let schema = GradeMap::builtin().annotate("telemetry", &telemetry_schema());
        assert_eq!(field_grade(schema.field_with_name("ts").unwrap()), Some(DataGrade::General));
        assert_eq!(field_grade(schema.field_with_name("vibration_z_rms").unwrap()), Some(DataGrade::Core));
        assert_eq!(schema.metadata()[GRADE_METADATA_KEY], "core");
    }
}
