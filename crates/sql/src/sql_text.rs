//! SQL text for the fragments sent to each site: quoted identifiers, and expressions turned
//! back into SQL without their `fleet` qualifiers (a fragment names the site's `public` table).

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DataFusionError};
use datafusion::logical_expr::Expr;

/// An expression as SQL for a fragment, with column qualifiers removed (fragments name the
/// site's `public` table, not the `fleet` one).
pub fn to_sql(expr: &Expr) -> Result<String, DataFusionError> {
    let unqualified = expr
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
            other => Ok(Transformed::no(other)),
        })?
        .data;
    Ok(datafusion::sql::unparser::expr_to_sql(&unqualified)?.to_string())
}

/// A SQL identifier, quoted.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
