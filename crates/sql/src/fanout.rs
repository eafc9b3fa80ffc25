//! One query's fan-out to the sites: whether its caller takes an answer without the sites
//! (or a site's partitions) that cannot answer in time, what the answer is missing, and how
//! each site's fragment went ([`FanOut`]); and, per site over all queries, how fragments went
//! and how long they took ([`SiteFragmentStats`], for the node's metrics).
//!
//! A fleet query's result says which sites answered in its schema metadata
//! ([`SITES_ANSWERED_METADATA_KEY`]); one with parts missing also lists them
//! ([`SITES_MISSING_METADATA_KEY`], [`INCOMPLETE_METADATA_KEY`]) and carries a warning
//! header ([`WARNING_HEADER`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Sent by a caller (and passed on with every fragment) who takes an answer without the parts
/// that cannot answer in time (a site, or a node's partitions): `true`. Without it such an
/// answer is an error, never a silent partial.
pub const ALLOW_PARTIAL: &str = "x-tessera-allow-partial";
/// The key, in the schema metadata of a result, that lists what it is missing ("; "-separated).
pub const INCOMPLETE_METADATA_KEY: &str = "tessera.incomplete";

/// The key, in the schema metadata of a fleet query's result, that lists the sites whose
/// fragments answered (", "-separated, in the order of the federation's sites).
pub const SITES_ANSWERED_METADATA_KEY: &str = "tessera.sites.answered";
/// The key, in the schema metadata of a fleet query's result, that lists the sites left out
/// (only with the caller's leave, [`ALLOW_PARTIAL`]; why each is in [`INCOMPLETE_METADATA_KEY`]).
pub const SITES_MISSING_METADATA_KEY: &str = "tessera.sites.missing";
/// The response header of a result with parts missing: what a client that reads headers
/// shows as a warning (the same text as [`INCOMPLETE_METADATA_KEY`]).
pub const WARNING_HEADER: &str = "x-tessera-warning";

/// How one site's fragment of a fleet query went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteAnswer {
    /// It answered (perhaps with parts missing, see [`FanOut::missing`]).
    Answered,
    /// It could not answer in time and was left out, with the caller's leave.
    LeftOut,
    /// It could not answer in time, and without the caller's leave the query failed.
    Unavailable,
    /// It refused (or failed otherwise), and so did the query.
    Refused,
}

impl SiteAnswer {
    /// The name metrics and the audit use: `answered`, `left_out`, `unavailable`, `refused`.
    pub fn name(&self) -> &'static str {
        match self {
            SiteAnswer::Answered => "answered",
            SiteAnswer::LeftOut => "left_out",
            SiteAnswer::Unavailable => "unavailable",
            SiteAnswer::Refused => "refused",
        }
    }
}

/// One site's fragment: which site, how it went, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFragment {
    /// The site.
    pub site: String,
    /// How it went.
    pub answer: SiteAnswer,
    /// From sending it to its answer (or to giving up on it).
    pub elapsed: std::time::Duration,
}

#[derive(Debug, Default)]
struct FanOutReport {
    missing: Vec<String>,
    sites: Vec<SiteFragment>,
}

/// One query's fan-out: whether its caller takes an answer without the parts that cannot
/// answer in time ([`ALLOW_PARTIAL`]; without it such an answer is an error, never a silent
/// partial), what the answer is missing, and how each site's fragment went. Every clone of a
/// caller's identity for one query shares the record. The default records nothing.
#[derive(Debug, Clone, Default)]
pub struct FanOut {
    allow_partial: bool,
    report: Option<Arc<Mutex<FanOutReport>>>,
}

impl FanOut {
    /// A query's record; `allow_partial`: its caller takes a partial answer.
    pub fn for_query(allow_partial: bool) -> Self {
        Self { allow_partial, report: Some(Arc::default()) }
    }

    /// A query whose caller takes a partial answer.
    pub fn allowing() -> Self {
        Self::for_query(true)
    }

    /// Whether the caller takes a partial answer.
    pub fn allowed(&self) -> bool {
        self.allow_partial
    }

    fn with<T>(&self, f: impl FnOnce(&mut FanOutReport) -> T) -> Option<T> {
        self.report.as_ref().map(|r| f(&mut r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }

    /// Notes a part missing from the answer (only when allowed).
    pub fn note(&self, gap: String) {
        if self.allow_partial {
            tracing::warn!(%gap, "a partial answer: the caller allowed it");
            self.with(|r| r.missing.push(gap));
        }
    }

    /// What is missing so far, in the order noted.
    pub fn missing(&self) -> Vec<String> {
        self.with(|r| r.missing.clone()).unwrap_or_default()
    }

    /// Records how one site's fragment went.
    pub fn site(&self, fragment: SiteFragment) {
        self.with(|r| r.sites.push(fragment));
    }

    /// Every site's fragment so far, in the order recorded.
    pub fn sites(&self) -> Vec<SiteFragment> {
        self.with(|r| r.sites.clone()).unwrap_or_default()
    }
}

/// Two callers' requests are alike if both take partial answers or neither does.
impl PartialEq for FanOut {
    fn eq(&self, other: &Self) -> bool {
        self.allowed() == other.allowed()
    }
}

impl Eq for FanOut {}

/// Per answering site, over every query of this node: how many fragments answered, were left
/// out or failed, and how long they took.
#[derive(Debug, Default)]
pub struct SiteFragmentStats {
    sites: Mutex<BTreeMap<String, SiteStats>>,
}

/// One site's fragments (see [`SiteFragmentStats`]).
#[derive(Debug, Default)]
pub struct SiteStats {
    /// Fragments by how they went, in the order of [`SITE_ANSWERS`].
    pub counts: [u64; 4],
    /// How long they took.
    pub latency: tessera_core::LatencyHistogram,
}

impl SiteFragmentStats {
    /// Stats with every one of `sites` at zero (so that their series exist before the first
    /// fleet query, and a rule can tell "no answer" from "not asked yet").
    pub fn for_sites<'a>(sites: impl IntoIterator<Item = &'a str>) -> Self {
        let stats = Self::default();
        stats.with_sites(sites);
        stats
    }

    fn with_sites<'a>(&self, sites: impl IntoIterator<Item = &'a str>) {
        let mut known = self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for site in sites {
            known.entry(site.to_string()).or_default();
        }
    }

    /// Counts one query's fragments.
    pub fn record(&self, fragments: &[SiteFragment]) {
        let mut sites = self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for f in fragments {
            let stats = sites.entry(f.site.clone()).or_default();
            let i = SITE_ANSWERS.iter().position(|a| *a == f.answer).expect("every answer is listed");
            stats.counts[i] += 1;
            stats.latency.observe(f.elapsed);
        }
    }

    /// Every site's counts (in the order of [`SITE_ANSWERS`]) and latency so far.
    pub fn snapshot(&self) -> Vec<(String, [u64; 4], tessera_core::LatencySnapshot)> {
        let sites = self.sites.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sites.iter().map(|(site, s)| (site.clone(), s.counts, s.latency.snapshot())).collect()
    }
}

/// The ways a fragment goes, in the order of [`SiteFragmentStats::snapshot`]'s counts.
pub const SITE_ANSWERS: [SiteAnswer; 4] =
    [SiteAnswer::Answered, SiteAnswer::LeftOut, SiteAnswer::Unavailable, SiteAnswer::Refused];

/// The schema metadata a fleet query's result carries about its fan-out (see the module doc):
/// nothing for a query that reached no other site.
pub fn result_metadata(fanout: &FanOut) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let sites = fanout.sites();
    let missing = fanout.missing();
    if !sites.is_empty() {
        let named = |answer: SiteAnswer| {
            sites.iter().filter(|f| f.answer == answer).map(|f| f.site.as_str()).collect::<Vec<_>>().join(", ")
        };
        out.push((SITES_ANSWERED_METADATA_KEY, named(SiteAnswer::Answered)));
        let left_out = named(SiteAnswer::LeftOut);
        if !left_out.is_empty() {
            out.push((SITES_MISSING_METADATA_KEY, left_out));
        }
    }
    if !missing.is_empty() {
        out.push((INCOMPLETE_METADATA_KEY, missing.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fragment(site: &str, answer: SiteAnswer, ms: u64) -> SiteFragment {
        SiteFragment { site: site.into(), answer, elapsed: Duration::from_millis(ms) }
    }

    #[test]
    fn the_result_names_the_sites_that_answered_and_those_left_out() {
        let fanout = FanOut::allowing();
        assert!(result_metadata(&fanout).is_empty(), "a query that reached no site says nothing");
        fanout.site(fragment("a", SiteAnswer::Answered, 5));
        fanout.site(fragment("b", SiteAnswer::LeftOut, 2000));
        fanout.site(fragment("c", SiteAnswer::Answered, 40));
        fanout.note("site b: did not answer within 2s".into());
        let metadata: BTreeMap<_, _> = result_metadata(&fanout).into_iter().collect();
        assert_eq!(metadata[SITES_ANSWERED_METADATA_KEY], "a, c");
        assert_eq!(metadata[SITES_MISSING_METADATA_KEY], "b");
        assert_eq!(metadata[INCOMPLETE_METADATA_KEY], "site b: did not answer within 2s");
        // Without the caller's leave nothing is noted as missing (the query fails instead).
        let strict = FanOut::for_query(false);
        strict.note("x".into());
        assert!(strict.missing().is_empty());
    }

    #[test]
    fn stats_count_each_sites_fragments_by_outcome() {
        let stats = SiteFragmentStats::for_sites(["a"]);
        assert_eq!(stats.snapshot()[0].1, [0; 4], "a known site is there before its first fragment");
        stats.record(&[fragment("a", SiteAnswer::Answered, 5), fragment("b", SiteAnswer::LeftOut, 2000)]);
        stats.record(&[fragment("a", SiteAnswer::Refused, 7)]);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.len(), 2);
        assert_eq!((snapshot[0].0.as_str(), snapshot[0].1), ("a", [1, 0, 0, 1]));
        assert_eq!((snapshot[1].0.as_str(), snapshot[1].1, snapshot[1].2.count), ("b", [0, 1, 0, 0], 1));
    }
}
