//! Queries across the nodes of one site: a site of several nodes answers like one.
//!
//! The nodes of a site share its Kafka topics in one consumer group, so each holds the
//! windows, alerts, late readings and recent readings of the motors of *its* partitions only.
//! Each node serves its own rows in the `node` schema and, beside them, the `partitions`
//! table: which partitions it answers for, how many each topic has, and a generation that
//! changes with every assignment or hand-over (see `tessera_ingest::PartitionOwnership`).
//! With [`crate::federation::SiteNodes`] configured, a node's `public` tables whose rows belong to motors become
//! [`FleetTable`](crate::fleet::FleetTable)s spread over the site's nodes, so a query at any
//! node (and every fragment another site asks for) runs one fragment per node, over `node`,
//! aggregates pushed down as across sites ([`crate::pushdown`]).
//!
//! **Exactly once.** Each node runs its fragment between two reads of its `partitions`; a node
//! whose generation moved meanwhile answered during a rebalance. The answers count only if
//! every node's generation held and the partitions they answered for cover every partition of
//! every topic exactly once; a node that cannot be reached counts only if the others cover
//! everything without it (its partitions moved). Otherwise the fragments run again, after a
//! short pause, until the fragment timeout; then the query fails `UNAVAILABLE`, naming the
//! partitions that were missing or answered twice. Never a silent partial answer.
//!
//! **Who decides.** Each node checks its own fragment for the caller ([`crate::release`]), as
//! each site does for a fleet query: of a column above the caller's allowance, only
//! aggregates of groups that meet the policy *on that node* leave it. A fragment sent for a
//! caller whose answer stays in the site carries [`crate::identity::WITHIN_SITE`]; a fragment
//! that serves another site's query does not, so raw `core` never leaves the site through a
//! sibling either.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, AsArray, Int32Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Schema, UInt64Type};

use crate::catalog::{Catalog, SnapshotTable};
use crate::error::SqlError;
use crate::identity::Identity;
use crate::remote::{Connection, Target, run_remote};

/// The table of what a node answers for: `topic`, `partitions` (in the topic), `owned`
/// (comma-separated partition numbers), `generation`.
pub const PARTITIONS: &str = "partitions";

/// How long to wait before asking the nodes again when a rebalance is under way.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One row of a node's `partitions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOwnership {
    /// The input topic.
    pub topic: String,
    /// How many partitions it has.
    pub partitions: i32,
    /// The ones this node answers for now.
    pub owned: Vec<i32>,
    /// Changes whenever this node's owned partitions do.
    pub generation: u64,
}

/// A node's `partitions` table, its rows taken from `rows` at each scan.
pub fn partitions_table(rows: impl Fn() -> Vec<TopicOwnership> + Send + Sync + 'static) -> Arc<SnapshotTable> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partitions", DataType::Int32, false),
        Field::new("owned", DataType::Utf8, false),
        Field::new("generation", DataType::UInt64, false),
    ]));
    SnapshotTable::new(schema.clone(), move || {
        let rows = rows();
        let owned = |r: &TopicOwnership| r.owned.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.topic.as_str()))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.partitions))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(owned))),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.generation))),
        ];
        RecordBatch::try_new(schema.clone(), columns).map(|b| vec![b]).unwrap_or_default()
    })
}

/// What one node answered for while it ran a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ownership {
    generation: u64,
    owned: BTreeSet<(String, i32)>,
    topic_partitions: BTreeMap<String, i32>,
}

const OWNERSHIP_SQL: &str = "SELECT topic, partitions, owned, generation FROM node.partitions";

fn ownership(batches: &[RecordBatch]) -> Result<Ownership, SqlError> {
    let mut o = Ownership { generation: 0, owned: BTreeSet::new(), topic_partitions: BTreeMap::new() };
    let bad = || SqlError::internal("a node's partitions table has an unexpected shape");
    for b in batches {
        let topics = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
        let sizes = b.column(1).as_primitive_opt::<Int32Type>().ok_or_else(bad)?;
        let owned = b.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
        let generations = b.column(3).as_primitive_opt::<UInt64Type>().ok_or_else(bad)?;
        for row in 0..b.num_rows() {
            let topic = topics.value(row).to_string();
            o.generation = generations.value(row);
            o.topic_partitions.insert(topic.clone(), sizes.value(row));
            for p in owned.value(row).split(',').filter(|p| !p.is_empty()) {
                o.owned.insert((topic.clone(), p.parse().map_err(|_| bad())?));
            }
        }
    }
    Ok(o)
}

/// One node's answer: its ownership before and after, and its batches.
type Answer = Result<(Ownership, Ownership, Vec<RecordBatch>), SqlError>;

/// Why the answers do not cover the site exactly once, if they do not.
fn uncovered(answers: &[(String, &Answer)]) -> Option<String> {
    let mut topics: BTreeMap<String, i32> = BTreeMap::new();
    let mut claimed: BTreeMap<(String, i32), Vec<&str>> = BTreeMap::new();
    let mut moving = Vec::new();
    for (node, answer) in answers {
        let Ok((before, after, _)) = answer else { continue };
        if before != after {
            moving.push(node.as_str());
            continue;
        }
        for (topic, n) in &after.topic_partitions {
            topics.entry(topic.clone()).and_modify(|m| *m = (*m).max(*n)).or_insert(*n);
        }
        for tp in &after.owned {
            claimed.entry(tp.clone()).or_default().push(node);
        }
    }
    if !moving.is_empty() {
        return Some(format!("partitions moved while {} answered", moving.join(", ")));
    }
    if topics.is_empty() {
        return Some("no node knows its topics' partitions yet".into());
    }
    let mut missing = Vec::new();
    let mut twice = Vec::new();
    for (topic, n) in &topics {
        for p in 0..*n {
            match claimed.get(&(topic.clone(), p)).map(Vec::len) {
                None => missing.push(format!("{topic}/{p}")),
                Some(1) => {}
                Some(_) => twice.push(format!("{topic}/{p}")),
            }
        }
    }
    match (missing.is_empty(), twice.is_empty()) {
        (true, true) => None,
        _ => Some(format!(
            "{}{}",
            if missing.is_empty() { String::new() } else { format!("no node answered for {}", missing.join(", ")) },
            if twice.is_empty() { String::new() } else { format!(" two nodes answered for {}", twice.join(", ")) },
        )),
    }
}

/// The answers of the nodes whose partitions held while they answered, taken in turn while
/// they overlap none taken before: each partition answered at most once. With what that leaves
/// out.
fn partial(answers: &[(String, &Answer)]) -> (Vec<RecordBatch>, String) {
    let mut topics: BTreeMap<String, i32> = BTreeMap::new();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut batches = Vec::new();
    for (_, answer) in answers {
        let Ok((before, after, rows)) = answer else { continue };
        for (topic, n) in before.topic_partitions.iter().chain(&after.topic_partitions) {
            topics.entry(topic.clone()).and_modify(|m| *m = (*m).max(*n)).or_insert(*n);
        }
        if before == after && after.owned.is_disjoint(&taken) {
            taken.extend(after.owned.iter().cloned());
            batches.extend(rows.iter().cloned());
        }
    }
    let missing: Vec<String> = topics
        .iter()
        .flat_map(|(topic, n)| (0..*n).map(move |p| (topic.clone(), p)))
        .filter(|tp| !taken.contains(tp))
        .map(|(topic, p)| format!("{topic}/{p}"))
        .collect();
    let missing = match (topics.is_empty(), missing.is_empty()) {
        (true, _) => "no node knows its topics' partitions yet".to_string(),
        (false, true) => "nothing".to_string(),
        (false, false) => format!("no answer for {}", missing.join(", ")),
    };
    (batches, missing)
}

/// Runs `sql` over this node's own tables (the `node` schema), as this node's fragment of a
/// query spread over the site's nodes: checked for `who` here.
pub(crate) async fn run_local_node(
    catalog: &Arc<Catalog>,
    who: &Identity,
    sql: &str,
) -> Result<Vec<RecordBatch>, SqlError> {
    catalog.run_checked(&catalog.local_context()?, who, sql).await
}

/// Runs `sql` (over `node` tables) at every node of this site for `who`, each between two
/// reads of its ownership, until the answers cover every partition exactly once (see the
/// module docs). This node runs its fragment in process.
pub async fn run_on_nodes(catalog: &Arc<Catalog>, who: &Identity, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let Some(nodes) = catalog.site_nodes() else {
        return Err(SqlError::internal("a query spread over the site's nodes without sql.site_nodes"));
    };
    let started = Instant::now();
    let connection = Connection { token: &nodes.token, timeout: nodes.timeout, tls: &nodes.tls };
    let within_site = !who.via_peer;
    loop {
        let budget = AtomicUsize::new(catalog.limits().memory_bytes);
        let local = async {
            let before = ownership(&run_local_node(catalog, who, OWNERSHIP_SQL).await?)?;
            let batches = run_local_node(catalog, who, sql).await?;
            let after = ownership(&run_local_node(catalog, who, OWNERSHIP_SQL).await?)?;
            Ok((before, after, batches))
        };
        let remote = nodes.addrs.iter().enumerate().map(|(index, addr)| {
            let target = Target {
                what: format!("node {addr} of site {}", catalog.site()),
                site: catalog.site(),
                addr,
                field: format!("site_nodes[{index}]"),
            };
            let (connection, budget) = (&connection, &budget);
            async move {
                let mut answers =
                    run_remote(connection, &target, who, within_site, &[OWNERSHIP_SQL, sql, OWNERSHIP_SQL], budget)
                        .await?;
                let after = ownership(&answers.pop().unwrap_or_default())?;
                let batches = answers.pop().unwrap_or_default();
                let before = ownership(&answers.pop().unwrap_or_default())?;
                Ok((before, after, batches))
            }
        });
        let (local, remote): (Answer, Vec<Answer>) = futures::join!(local, futures::future::join_all(remote));
        let mut answers: Vec<(String, &Answer)> = vec![("this node".to_string(), &local)];
        answers.extend(nodes.addrs.iter().map(|a| format!("node {a}")).zip(remote.iter()));
        // A refusal, or any error but an unreachable node, is the query's.
        for (_, answer) in &answers {
            if let Err(e) = answer
                && !matches!(e, SqlError::Unavailable { .. })
            {
                return Err(e.clone());
            }
        }
        let why = match uncovered(&answers) {
            None => {
                return Ok(answers
                    .into_iter()
                    .filter_map(|(_, a)| a.as_ref().ok())
                    .flat_map(|a| a.2.clone())
                    .collect());
            }
            Some(why) => why,
        };
        let unreachable: Vec<String> = answers
            .iter()
            .filter_map(|(_, a)| match a {
                Err(e) => Some(e.to_string()),
                Ok(_) => None,
            })
            .collect();
        // A caller who takes a partial answer gets it within half the fragment timeout, so that
        // a site answering another site's fragment answers within that site's timeout.
        if started.elapsed() + RETRY_PAUSE >= nodes.timeout / 2 && who.fanout.allowed() {
            // The caller takes what the nodes answered without overlap, told what is missing.
            let (batches, missing) = partial(&answers);
            let also = if unreachable.is_empty() {
                String::new()
            } else {
                format!(" (unreachable: {})", unreachable.join("; "))
            };
            who.fanout.note(format!("site {}: {missing}{also}", catalog.site()));
            return Ok(batches);
        }
        if started.elapsed() + RETRY_PAUSE >= nodes.timeout {
            let also = if unreachable.is_empty() {
                String::new()
            } else {
                format!("; unreachable: {}", unreachable.join("; "))
            };
            return Err(SqlError::unavailable(format!(
                "site {} could not answer for all its partitions within {:?} (sql.fragment_timeout): {why}{also}",
                catalog.site(),
                nodes.timeout
            )));
        }
        tracing::debug!(site = catalog.site(), %why, "the site's nodes did not cover its partitions; asking again");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(generation: u64, owned: &[i32]) -> Ownership {
        Ownership {
            generation,
            owned: owned.iter().map(|p| ("t".to_string(), *p)).collect(),
            topic_partitions: [("t".to_string(), 4)].into(),
        }
    }

    fn ok(before: Ownership, after: Ownership) -> Answer {
        Ok((before, after, Vec::new()))
    }

    #[test]
    fn answers_count_only_when_they_cover_every_partition_once() {
        let (a, b) = (ok(own(1, &[0, 1]), own(1, &[0, 1])), ok(own(3, &[2, 3]), own(3, &[2, 3])));
        assert_eq!(uncovered(&[("a".into(), &a), ("b".into(), &b)]), None);
        // A gap, an overlap, a move during the fragment.
        let gap = ok(own(3, &[2]), own(3, &[2]));
        assert!(uncovered(&[("a".into(), &a), ("b".into(), &gap)]).unwrap().contains("no node answered for t/3"));
        let twice = ok(own(3, &[1, 2, 3]), own(3, &[1, 2, 3]));
        assert!(uncovered(&[("a".into(), &a), ("b".into(), &twice)]).unwrap().contains("two nodes answered for t/1"));
        let moved = ok(own(3, &[2, 3]), own(4, &[2]));
        assert!(uncovered(&[("a".into(), &a), ("b".into(), &moved)]).unwrap().contains("moved while b"));
        // An unreachable node counts only if the others cover everything without it.
        let gone: Answer = Err(SqlError::unavailable("down"));
        let all = ok(own(5, &[0, 1, 2, 3]), own(5, &[0, 1, 2, 3]));
        assert_eq!(uncovered(&[("a".into(), &all), ("c".into(), &gone)]), None);
        assert!(uncovered(&[("a".into(), &a), ("c".into(), &gone)]).is_some());
    }

    #[test]
    fn a_partial_answer_takes_each_partition_at_most_once_and_names_the_rest() {
        let rows = |n: i64| {
            vec![
                RecordBatch::try_from_iter([(
                    "n",
                    Arc::new(datafusion::arrow::array::Int64Array::from(vec![n])) as ArrayRef,
                )])
                .unwrap(),
            ]
        };
        let a: Answer = Ok((own(1, &[0, 1]), own(1, &[0, 1]), rows(1)));
        let overlap: Answer = Ok((own(2, &[1, 2]), own(2, &[1, 2]), rows(2)));
        let moving: Answer = Ok((own(3, &[3]), own(4, &[]), rows(3)));
        let gone: Answer = Err(SqlError::unavailable("down"));
        let answers = [("a".to_string(), &a), ("b".into(), &overlap), ("c".into(), &moving), ("d".into(), &gone)];
        let (batches, missing) = partial(&answers);
        assert_eq!(batches.len(), 1, "only a's answer: b overlaps it, c moved while answering");
        assert_eq!(missing, "no answer for t/2, t/3");
        let b_alone = [("b".to_string(), &overlap)];
        assert_eq!(partial(&b_alone).1, "no answer for t/0, t/3");
    }
}
