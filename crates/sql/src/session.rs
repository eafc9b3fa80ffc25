//! What one caller's query runs in: a fresh DataFusion context over this site's tables (spread
//! over the site's nodes when it has several), and, with a federation, the `fleet` schema
//! scanned on the caller's behalf, with the rule that pushes aggregates over spread tables
//! down to the sites or nodes.
//!
//! It sits above [`crate::catalog`], [`crate::fleet`] and [`crate::pushdown`], which run the
//! fragments in the site's plain context ([`Catalog::local_context`]).

use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::execution::context::SessionContext;

use crate::catalog::{CATALOG, Catalog};
use crate::error::SqlError;
use crate::federation::FLEET;
use crate::fleet::{Spread, fleet_table};
use crate::identity::Identity;
use crate::pushdown::PushAggregatesToSites;

impl Catalog {
    /// A fresh context over this site's tables for `who`, as a fragment of this site runs: this
    /// node's tables and, when the site has several nodes, its `public` tables whose rows
    /// belong to motors spread over them ([`crate::site`]), aggregates pushed down to them.
    pub fn site_context(self: &Arc<Self>, who: &Identity) -> Result<SessionContext, SqlError> {
        let ctx = self.local_context()?;
        ctx.add_optimizer_rule(Arc::new(PushAggregatesToSites));
        if self.site_nodes().is_some() {
            for t in self.tables().iter().filter(|t| per_motor(t)) {
                let table = fleet_table(&t.name, t.provider.schema().as_ref(), self, who, Spread::SiteNodes);
                ctx.deregister_table(t.name.as_str()).map_err(SqlError::from_datafusion)?;
                ctx.register_table(t.name.as_str(), table).map_err(SqlError::from_datafusion)?;
            }
        }
        Ok(ctx)
    }

    /// A fresh context for `who`: this site's tables ([`Catalog::site_context`]), and with a
    /// federation, the `fleet` schema (every raw and derived table, across sites, scanned on
    /// `who`'s behalf).
    pub fn context(self: &Arc<Self>, who: &Identity) -> Result<SessionContext, SqlError> {
        let who = &who.at_home(self.site());
        let ctx = self.site_context(who)?;
        if self.federation().is_some() {
            let catalog = ctx.catalog(CATALOG).ok_or_else(|| SqlError::internal("no default catalog"))?;
            catalog.register_schema(FLEET, Arc::new(MemorySchemaProvider::new())).map_err(SqlError::from_datafusion)?;
            for t in self.tables().iter().filter(|t| t.kind.federated()) {
                let table = fleet_table(&t.name, t.provider.schema().as_ref(), self, who, Spread::Sites);
                ctx.register_table(TableReference::partial(FLEET, t.name.as_str()), table)
                    .map_err(SqlError::from_datafusion)?;
            }
        }
        Ok(ctx)
    }
}

/// Whether `table`'s rows belong to motors, so to the partitions a node answers for: the raw
/// and derived tables with a `motor_id` column (the site's nodes hold them apart).
fn per_motor(table: &crate::catalog::ServedTable) -> bool {
    table.kind.federated() && table.provider.schema().index_of("motor_id").is_ok()
}
