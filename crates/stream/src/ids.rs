//! Motor ids, site and query names kept once per process. Every per-motor table of the stage
//! (each judge's, each alert tracker's, each anomaly function's, the health board's, the
//! window operator's) keys its motors by the one shared copy: 16 bytes in a table, where a
//! `String` of its own took 24 and a heap block of 32 (a dozen tables hold every motor).
//!
//! [`MotorTable`] is the per-motor table of the judges, the alert trackers, the health board
//! and the anomaly functions: rows in pages
//! of at most [`PAGE_ROWS`] (so a table of 100,000 motors leaves at most one page unused,
//! where a hash map's slots are a third empty after it doubles) and an index of 4-byte row
//! numbers.

use std::collections::HashSet;
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

/// Forgets the names no table holds any more (motors handed over or dropped); how many.
pub fn forget_unused() -> usize {
    let mut kept = kept();
    let before = kept.len();
    kept.retain(|name| Arc::strong_count(name) > 1);
    before - kept.len()
}

/// Rows per page of a [`MotorTable`]; the last page grows up to it, so a small table stays
/// small.
pub const PAGE_ROWS: usize = 1024;

/// A per-motor table: each motor's row (its shared id and its value) in pages, found through
/// an index of row numbers hashed by motor id. Rows move when another is removed (the last
/// row takes its place); order is not kept.
#[derive(Debug, Clone)]
pub struct MotorTable<V> {
    /// Row numbers, by the hash of their motor id.
    index: hashbrown::HashTable<u32>,
    /// Full pages of [`PAGE_ROWS`] rows, then the last one.
    pages: Vec<Vec<(Arc<str>, V)>>,
    len: usize,
}

impl<V> Default for MotorTable<V> {
    fn default() -> Self {
        Self { index: hashbrown::HashTable::new(), pages: Vec::new(), len: 0 }
    }
}

fn hash(motor: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(motor)
}

impl<V> MotorTable<V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many motors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no motor.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn row(&self, i: usize) -> &(Arc<str>, V) {
        &self.pages[i / PAGE_ROWS][i % PAGE_ROWS]
    }

    fn row_mut(&mut self, i: usize) -> &mut (Arc<str>, V) {
        &mut self.pages[i / PAGE_ROWS][i % PAGE_ROWS]
    }

    fn find(&self, motor: &str) -> Option<usize> {
        self.index.find(hash(motor), |&i| &*self.row(i as usize).0 == motor).map(|&i| i as usize)
    }

    /// The motor's value.
    pub fn get(&self, motor: &str) -> Option<&V> {
        self.find(motor).map(|i| &self.row(i).1)
    }

    /// The motor's value, to change.
    pub fn get_mut(&mut self, motor: &str) -> Option<&mut V> {
        self.find(motor).map(|i| &mut self.row_mut(i).1)
    }

    /// The motor's value, made by `make` under the motor's shared id when it has none (a known
    /// motor allocates nothing).
    pub fn entry(&mut self, motor: &str, make: impl FnOnce() -> V) -> &mut V {
        match self.try_entry(motor, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(value) => value,
        }
    }

    /// [`Self::entry`] with a `make` that may fail (then nothing is added).
    pub fn try_entry<E>(&mut self, motor: &str, make: impl FnOnce() -> Result<V, E>) -> Result<&mut V, E> {
        let i = match self.find(motor) {
            Some(i) => i,
            None => self.push(shared(motor), make()?),
        };
        Ok(&mut self.row_mut(i).1)
    }

    /// Sets the motor's value (`motor` a shared id, [`shared`]).
    pub fn insert(&mut self, motor: Arc<str>, value: V) {
        match self.find(&motor) {
            Some(i) => self.row_mut(i).1 = value,
            None => {
                self.push(motor, value);
            }
        }
    }

    /// A new last row; its number.
    fn push(&mut self, motor: Arc<str>, value: V) -> usize {
        let i = self.len;
        if i.is_multiple_of(PAGE_ROWS) {
            self.pages.push(Vec::new());
        }
        let page = self.pages.last_mut().expect("a page for the row");
        if page.len() == page.capacity() {
            // The last page doubles up to a full page, and no further.
            let grown = (page.capacity() * 2).clamp(8, PAGE_ROWS);
            page.reserve_exact(grown - page.len());
        }
        let h = hash(&motor);
        page.push((motor, value));
        self.len += 1;
        let pages = &self.pages;
        self.index.insert_unique(h, i as u32, |&j| hash(&pages[j as usize / PAGE_ROWS][j as usize % PAGE_ROWS].0));
        i
    }

    /// Keeps the motors `keep` accepts (it may change them).
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut V) -> bool) {
        let mut i = 0;
        while i < self.len {
            let (motor, value) = self.row_mut(i);
            if keep(motor, value) {
                i += 1;
            } else {
                self.remove_row(i);
            }
        }
    }

    /// Removes row `i`: the last row takes its place.
    fn remove_row(&mut self, i: usize) {
        let last = self.len - 1;
        let h = hash(&self.row(i).0);
        self.index.find_entry(h, |&j| j as usize == i).expect("every row is indexed").remove();
        if i != last {
            let h = hash(&self.row(last).0);
            *self.index.find_mut(h, |&j| j as usize == last).expect("every row is indexed") = i as u32;
        }
        let moved = self.pages.last_mut().and_then(Vec::pop).expect("the last row");
        if i != last {
            *self.row_mut(i) = moved;
        }
        if self.pages.last().is_some_and(Vec::is_empty) {
            self.pages.pop();
        }
        self.len -= 1;
    }

    /// Removes every motor.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Every motor and its value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        self.pages.iter().flatten().map(|(m, v)| (m, v))
    }

    /// Every motor and its value, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut V)> {
        self.pages.iter_mut().flatten().map(|(m, v)| (&*m, v))
    }

    /// Every value.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<V> Extend<(Arc<str>, V)> for MotorTable<V> {
    fn extend<I: IntoIterator<Item = (Arc<str>, V)>>(&mut self, rows: I) {
        for (motor, value) in rows {
            self.insert(motor, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_finds_inserts_and_removes_across_pages() {
        let mut table = MotorTable::new();
        let n = 2 * PAGE_ROWS + 17;
        for m in 0..n {
            *table.entry(&format!("M{m}"), || 0) += m;
        }
        *table.entry("M5", || 1_000_000) += 1;
        assert_eq!(table.len(), n);
        assert_eq!(table.get("M5"), Some(&6));
        assert_eq!(table.pages.len(), 3);
        assert!(table.pages[..2].iter().all(|p| p.capacity() == PAGE_ROWS), "full pages, no slack");
        // Every motor with an odd number goes: rows move, and each is still found.
        table.retain(|motor, _| motor[1..].parse::<usize>().unwrap() % 2 == 0);
        assert_eq!(table.len(), n.div_ceil(2));
        for m in 0..n {
            assert_eq!(table.get(&format!("M{m}")).copied(), (m % 2 == 0).then_some(m), "M{m}");
        }
        let mut seen: Vec<usize> = table.values().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).step_by(2).collect::<Vec<_>>());
        table.insert(shared("M0"), 42);
        assert_eq!(table.get("M0"), Some(&42));
        assert_eq!(table.len(), n.div_ceil(2));
        table.clear();
        assert!(table.is_empty() && table.get("M0").is_none());
    }

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
