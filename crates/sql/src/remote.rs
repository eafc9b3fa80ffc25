//! Calling another node's Flight SQL endpoint with fragments: whom (a [`Target`]), how (a
//! [`Connection`]: the federation token, the timeout, the TLS), as whom (the caller's identity
//! in `x-tessera-as-*` headers, and whether the answer stays in the site), and within what
//! memory (one budget shared by every answer of a query). [`crate::site`] and [`crate::fleet`]
//! use it for the site's other nodes and for the other sites.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt as _;
use tessera_core::ConfigError;

use crate::error::SqlError;
use crate::identity::{ALLOW_PARTIAL, AS_ROLE, AS_SITE, AS_USER, INCOMPLETE_METADATA_KEY, Identity, WITHIN_SITE};

/// Another node to send fragments to: what to call it in errors, its site, its address, and
/// the config field that names it.
pub(crate) struct Target<'a> {
    pub(crate) what: String,
    pub(crate) site: &'a str,
    pub(crate) addr: &'a str,
    pub(crate) field: String,
}

/// How nodes call each other: the federation token, the fragment timeout, the TLS.
pub(crate) struct Connection<'a> {
    pub(crate) token: &'a str,
    pub(crate) timeout: Duration,
    pub(crate) tls: &'a tessera_tls::ClientTls,
}

/// Runs each of `sqls`, one after the other on one connection, at `target` as `who`; the
/// answers in order. `within_site` says the answer stays in this site (a node of the same
/// site asks, for a caller of this site, see [`WITHIN_SITE`]); otherwise it leaves it.
pub(crate) async fn run_remote(
    connection: &Connection<'_>,
    target: &Target<'_>,
    who: &Identity,
    within_site: bool,
    sqls: &[&str],
    budget: &std::sync::atomic::AtomicUsize,
) -> Result<Vec<Vec<RecordBatch>>, SqlError> {
    let at = |e: &dyn std::fmt::Display| format!("{}: {e}", target.what);
    let endpoint = connection
        .tls
        .endpoint(target.addr, Duration::from_secs(3))
        .map_err(|e| ConfigError::new(target.field.clone(), at(&e)))?;
    let channel = endpoint
        .timeout(connection.timeout)
        .connect()
        .await
        .map_err(|e| SqlError::Unavailable { message: at(&e), source: Some(Arc::new(e)) })?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(connection.token.to_string());
    client.set_header(AS_USER, who.user.clone());
    client.set_header(AS_ROLE, who.role.name());
    if let Some(site) = &who.site {
        client.set_header(AS_SITE, site.clone());
    }
    if within_site {
        client.set_header(WITHIN_SITE, "1");
    }
    if who.fanout.allowed() {
        client.set_header(ALLOW_PARTIAL, "true");
    }
    for (key, value) in crate::trace::outgoing_headers() {
        client.set_header(key, value);
    }
    let from_peer = |e: FlightError| match e {
        FlightError::Tonic(status) => SqlError::from_status(target.site, *status),
        other => SqlError::Unavailable { message: at(&other), source: Some(Arc::new(other)) },
    };
    let mut answers = Vec::new();
    for sql in sqls {
        let info = client.execute(sql.to_string(), None).await.map_err(from_peer)?;
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint.ticket.ok_or_else(|| SqlError::internal(at(&"an endpoint without a ticket")))?;
            let mut stream = client.do_get(ticket).await.map_err(from_peer)?;
            while let Some(batch) = stream.try_next().await.map_err(from_peer)? {
                take(budget, batch.get_array_memory_size()).map_err(|()| {
                    SqlError::ResourceExhausted(format!(
                        "the answers would hold more here than one query may (sql.query_memory_bytes); \
                         aggregate or filter more at the sites ({} was answering)",
                        target.what
                    ))
                })?;
                batches.push(batch);
            }
            // What the other node's answer is missing (it was told the caller allows that).
            if let Some(missing) = stream.schema().and_then(|s| s.metadata().get(INCOMPLETE_METADATA_KEY)) {
                missing.split("; ").for_each(|gap| who.fanout.note(gap.to_string()));
            }
        }
        answers.push(batches);
    }
    Ok(answers)
}

/// Takes `bytes` from `budget`, or nothing when they are not all there.
pub(crate) fn take(budget: &std::sync::atomic::AtomicUsize, bytes: usize) -> Result<(), ()> {
    use std::sync::atomic::Ordering;
    budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(bytes)).map(|_| ()).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::take;

    #[test]
    fn the_sites_answers_share_one_budget_and_a_refused_batch_takes_nothing() {
        let budget = AtomicUsize::new(100);
        assert_eq!(take(&budget, 60), Ok(()));
        assert_eq!(take(&budget, 60), Err(()));
        assert_eq!(budget.load(Ordering::Acquire), 40, "the refused batch took nothing");
        assert_eq!(take(&budget, 40), Ok(()));
        assert_eq!(take(&budget, 1), Err(()));
    }
}
