//! What one caller's query runs in: a fresh DataFusion context over this site's tables and,
//! with a federation, the `fleet` schema scanned on the caller's behalf, with the rule that
//! pushes aggregates over `fleet` tables down to the sites.
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
use crate::fleet::fleet_table;
use crate::identity::Identity;
use crate::pushdown::PushAggregatesToSites;

impl Catalog {
    /// A fresh context for `who`: this site's tables, and with a federation, the `fleet`
    /// schema (every raw and derived table, across sites, scanned on `who`'s behalf).
    pub fn context(self: &Arc<Self>, who: &Identity) -> Result<SessionContext, SqlError> {
        let who = &who.at_home(self.site());
        let ctx = self.local_context()?;
        ctx.add_optimizer_rule(Arc::new(PushAggregatesToSites));
        if self.federation().is_some() {
            let catalog = ctx.catalog(CATALOG).ok_or_else(|| SqlError::internal("no default catalog"))?;
            catalog.register_schema(FLEET, Arc::new(MemorySchemaProvider::new())).map_err(SqlError::from_datafusion)?;
            for t in self.tables().iter().filter(|t| t.kind.federated()) {
                let table = fleet_table(&t.name, t.provider.schema().as_ref(), self, who);
                ctx.register_table(TableReference::partial(FLEET, t.name.as_str()), table)
                    .map_err(SqlError::from_datafusion)?;
            }
        }
        Ok(ctx)
    }
}
