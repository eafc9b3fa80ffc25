//! Vibration severity zones after ISO 20816 / 10816-3: a machine class and the velocity RMS
//! (mm/s) that separates zone A (new) from B (long-term running), B from C (limited running)
//! and C from D (damage). The four ISO classes are built in; a plant may define its own class
//! by its three boundaries (see [`zone_boundaries`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// ISO 20816 / 10816-3 machine classes: I small machines (up to 15 kW), II medium (15–75 kW,
/// or up to 300 kW on special foundations), III large on rigid foundations, IV large on soft
/// foundations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineClass {
    /// Small machines.
    I,
    /// Medium machines.
    II,
    /// Large, rigid foundations.
    III,
    /// Large, soft foundations.
    IV,
}

impl MachineClass {
    /// All four, in order.
    pub const ALL: [MachineClass; 4] = [MachineClass::I, MachineClass::II, MachineClass::III, MachineClass::IV];

    /// The zone boundaries A/B, B/C and C/D, velocity RMS in mm/s.
    pub fn boundaries(self) -> [f64; 3] {
        match self {
            MachineClass::I => [0.71, 1.8, 4.5],
            MachineClass::II => [1.12, 2.8, 7.1],
            MachineClass::III => [1.8, 4.5, 11.2],
            MachineClass::IV => [2.8, 7.1, 18.0],
        }
    }
}

impl fmt::Display for MachineClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineClass::I => "I",
            MachineClass::II => "II",
            MachineClass::III => "III",
            MachineClass::IV => "IV",
        })
    }
}

impl FromStr for MachineClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MachineClass::ALL
            .into_iter()
            .find(|c| c.to_string().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("{s:?} is not an ISO machine class (I, II, III, IV)"))
    }
}

/// The highest boundary a class may have, mm/s (ISO's class IV C/D boundary is 18).
pub const MAX_ZONE_BOUNDARY_MM_S: f64 = 100.0;

/// Checks a class's own zone boundaries: three, positive, strictly rising, at most
/// [`MAX_ZONE_BOUNDARY_MM_S`].
pub fn zone_boundaries(values: &[f64]) -> Result<[f64; 3], String> {
    let [ab, bc, cd] = values else {
        return Err(format!("needs 3 boundaries (A/B, B/C, C/D in mm/s), not {}", values.len()));
    };
    if !(ab.is_finite() && *ab > 0.0 && ab < bc && bc < cd && *cd <= MAX_ZONE_BOUNDARY_MM_S) {
        return Err(format!(
            "the boundaries must rise, from above 0 to at most {MAX_ZONE_BOUNDARY_MM_S} mm/s: {ab}, {bc}, {cd}"
        ));
    }
    Ok([*ab, *bc, *cd])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_and_print_as_iso_names() {
        for c in MachineClass::ALL {
            assert_eq!(c.to_string().parse::<MachineClass>(), Ok(c));
        }
        assert_eq!("iii".parse::<MachineClass>(), Ok(MachineClass::III));
        assert!("V".parse::<MachineClass>().unwrap_err().contains("I, II, III, IV"));
        assert_eq!(MachineClass::II.boundaries()[2], 7.1);
    }

    #[test]
    fn own_boundaries_must_rise_within_bounds() {
        assert_eq!(zone_boundaries(&[1.4, 3.5, 9.0]), Ok([1.4, 3.5, 9.0]));
        assert!(zone_boundaries(&[1.4, 3.5]).unwrap_err().contains("needs 3"));
        assert!(zone_boundaries(&[3.5, 1.4, 9.0]).is_err());
        assert!(zone_boundaries(&[0.0, 1.4, 9.0]).is_err());
        assert!(zone_boundaries(&[1.0, 2.0, f64::NAN]).is_err());
        assert!(zone_boundaries(&[1.0, 2.0, 500.0]).is_err());
    }
}
