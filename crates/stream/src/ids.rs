//! Motor ids, site and query names kept once per process. Every per-motor table of the stage
//! (each judge's, each alert tracker's, each anomaly function's, the health board's, the
//! window operator's) keys its motors by the one shared copy: 16 bytes in a table, where a
//! `String` of its own took 24 and a heap block of 32 (a dozen tables hold every motor).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

fn kept() -> MutexGuard<'static, HashSet<Arc<str>>> {
    static KEPT: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    KEPT.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shared copy of `name`. Tables look a known motor up by `&str` and call this only for
/// a motor new to them.
pub fn shared(name: &str) -> Arc<str> {
    let mut kept = kept();
    if let Some(name) = kept.get(name) {
        return name.clone();
    }
    let name: Arc<str> = name.into();
    kept.insert(name.clone());
    name
}

/// The row of `key` in a per-motor table, made by `make` under the shared copy of `key` when
/// the table has none (a known key allocates nothing).
pub fn entry<'a, V, S: BuildHasher>(
    table: &'a mut HashMap<Arc<str>, V, S>,
    key: &str,
    make: impl FnOnce() -> V,
) -> &'a mut V {
    if !table.contains_key(key) {
        table.insert(shared(key), make());
    }
    table.get_mut(key).expect("just made sure")
}

/// Forgets the names no table holds any more (motors handed over or dropped); how many.
pub fn forget_unused() -> usize {
    let mut kept = kept();
    let before = kept.len();
    kept.retain(|name| Arc::strong_count(name) > 1);
    before - kept.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once_while_a_table_holds_it() {
        let a = shared("ids-test-motor");
        let b = shared("ids-test-motor");
        assert!(Arc::ptr_eq(&a, &b), "one copy");
        drop((a, b));
        forget_unused();
        assert_eq!(Arc::strong_count(&shared("ids-test-motor")), 2, "made anew, held by the set and here");
    }
}
