//! Finding a reading's motor fast: ids packed into integer keys ([`short_key`]), and a
//! batch's rows grouped by motor ([`MotorRuns`]) so each motor's state is looked up once per
//! batch.

/// A batch's rows grouped by motor, so that each motor's state is looked up once per batch
/// rather than once per reading (an ingest batch interleaves many motors). Kept between batches
/// to reuse its buffers.
#[derive(Debug, Default)]
pub(super) struct MotorRuns {
    /// Per motor index: its group in the batch being grouped, or `u32::MAX`.
    group_of: Vec<u32>,
    /// Per group: the motor index.
    motors: Vec<usize>,
    /// Per group: where its rows start in `rows`; one more entry closes the last group.
    starts: Vec<u32>,
    /// Row numbers, group after group, in arrival order within a group.
    pub(super) rows: Vec<u32>,
    /// Per row: its motor index, then its group.
    row_group: Vec<u32>,
}

impl MotorRuns {
    /// Groups `rows` by the motor index `motor_of` gives each (`known_motors` are
    /// indexed already; `motor_of` may add more); groups come in order of first appearance.
    pub(super) fn group(
        &mut self,
        rows: std::ops::Range<usize>,
        known_motors: usize,
        mut motor_of: impl FnMut(usize) -> usize,
    ) {
        self.motors.clear();
        self.starts.clear();
        self.row_group.clear();
        // Motor indices first, in a loop of their own: the lookups do not depend on each other,
        // so several are in flight at once.
        let (first, n) = (rows.start, rows.len());
        self.row_group.extend(rows.map(|row| motor_of(row) as u32));
        let motors = self.row_group.iter().max().map_or(0, |&m| m as usize + 1);
        self.group_of.resize(known_motors.max(motors).max(self.group_of.len()), u32::MAX);
        for slot in &mut self.row_group {
            let idx = *slot as usize;
            let mut g = self.group_of[idx];
            if g == u32::MAX {
                g = self.motors.len() as u32;
                self.group_of[idx] = g;
                self.motors.push(idx);
                self.starts.push(0);
            }
            self.starts[g as usize] += 1;
            *slot = g;
        }
        // Counts → start positions (exclusive prefix sums), then place each row.
        let mut next = 0;
        for start in &mut self.starts {
            (*start, next) = (next, next + *start);
        }
        self.starts.push(next);
        self.rows.clear();
        self.rows.resize(n, 0);
        let mut cursor = self.starts.clone();
        for (row, &g) in self.row_group.iter().enumerate() {
            self.rows[cursor[g as usize] as usize] = (first + row) as u32;
            cursor[g as usize] += 1;
        }
        for &idx in &self.motors {
            self.group_of[idx] = u32::MAX;
        }
    }

    /// Each group's motor index, where its rows start in [`Self::rows`], and its rows.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, usize, &[u32])> {
        self.motors.iter().enumerate().map(|(g, &idx)| {
            let (start, end) = (self.starts[g] as usize, self.starts[g + 1] as usize);
            (idx, start, &self.rows[start..end])
        })
    }
}

/// A motor id of up to 15 bytes (the usual case) packed with its length into an integer, so
/// the per-reading lookup hashes and compares an integer, not a string; `None` for longer ids.
/// Byte `i` of the id is byte `i` of the little-endian integer; byte 15 holds the length.
#[inline]
pub(super) fn short_key(id: &str) -> Option<u128> {
    let bytes = id.as_bytes();
    (bytes.len() < 16).then(|| {
        let mut packed = [0u8; 16];
        packed[..bytes.len()].copy_from_slice(bytes);
        packed[15] = bytes.len() as u8;
        u128::from_le_bytes(packed)
    })
}

/// [`short_key`] of the id at `data[start..start + len]`, read as one 16-byte load and
/// masked where the buffer has 16 bytes from `start` (all rows but the last few of a column).
/// The byte-wise copy in [`short_key`] costs a store-to-load forwarding stall per reading.
#[inline]
pub(super) fn short_key_in(data: &[u8], start: usize, len: usize, id: &str) -> Option<u128> {
    if len >= 16 {
        return None;
    }
    match data.get(start..start + 16) {
        Some(chunk) => {
            let word = u128::from_le_bytes(chunk.try_into().expect("16 bytes"));
            let mask = (1u128 << (8 * len)) - 1;
            Some((word & mask) | ((len as u128) << 120))
        }
        None => short_key(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn short_keys_read_in_place_match_the_copied_ones() {
        let ids = ["", "M", "M0001", "motor-0000001", "fifteen-bytes-x", "sixteen-bytes-xx", "M1\0", "M1"];
        let column = StringArray::from(ids.to_vec());
        let (offsets, data) = (column.value_offsets(), column.value_data());
        let mut keys = Vec::new();
        for (row, id) in ids.iter().enumerate() {
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let in_place = short_key_in(data, start, end - start, id);
            assert_eq!(in_place, short_key(id), "{id:?} (the last rows take the copying path)");
            assert_eq!(in_place.is_none(), id.len() >= 16, "{id:?}");
            keys.push(in_place);
        }
        let distinct: std::collections::HashSet<_> = keys.iter().flatten().collect();
        assert_eq!(distinct.len(), ids.len() - 1, "every short id has its own key, \"M1\" and \"M1\\0\" too");
    }

    #[test]
    fn runs_group_rows_by_motor_in_arrival_order() {
        let mut runs = MotorRuns::default();
        let motors = [2, 0, 2, 5, 0, 2];
        runs.group(0..motors.len(), 3, |row| motors[row]);
        let groups: Vec<(usize, Vec<u32>)> = runs.iter().map(|(m, _, rows)| (m, rows.to_vec())).collect();
        assert_eq!(groups, [(2, vec![0, 2, 5]), (0, vec![1, 4]), (5, vec![3])]);
        // The scratch is reset for the next batch.
        runs.group(4..6, 6, |row| [0, 0, 0, 0, 5, 5][row]);
        let groups: Vec<(usize, Vec<u32>)> = runs.iter().map(|(m, _, rows)| (m, rows.to_vec())).collect();
        assert_eq!(groups, [(5, vec![4, 5])], "row numbers are the batch's");
        runs.group(0..0, 6, |_| unreachable!());
        assert_eq!(runs.iter().count(), 0);
    }
}
