//! Durations in config files held as milliseconds in code (`#[serde(with =
//! "tessera_core::duration_millis")]` on an integer field): written as humantime text
//! (`"300ms"`, `"5m"`, `"30days"`), read from that or from a bare integer of milliseconds (how
//! the `*_ms` keys they replace were written).

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// Writes `ms` milliseconds as humantime text.
pub fn serialize<T, S>(ms: &T, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Copy + TryInto<u64>,
    S: Serializer,
{
    let ms: u64 = (*ms).try_into().map_err(|_| serde::ser::Error::custom("a negative duration"))?;
    serializer.serialize_str(&humantime::format_duration(Duration::from_millis(ms)).to_string())
}

/// Reads humantime text or an integer of milliseconds.
pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
where
    T: TryFrom<u64>,
    D: Deserializer<'de>,
{
    let ms = deserializer.deserialize_any(Millis)?;
    T::try_from(ms).map_err(|_| de::Error::custom(format!("{ms} ms is too long")))
}

struct Millis;

impl Visitor<'_> for Millis {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"300ms\", \"5m\" or \"30days\" (or an integer of milliseconds)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} ms: a duration cannot be negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        // A bare number in text (an environment variable) is milliseconds too.
        if let Ok(ms) = v.trim().parse::<u64>() {
            return Ok(ms);
        }
        let d = humantime::parse_duration(v).map_err(|e| E::custom(format!("{v:?}: {e}")))?;
        u64::try_from(d.as_millis()).map_err(|_| E::custom(format!("{v:?} is too long")))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Config {
        #[serde(with = "crate::duration_millis")]
        timeout_ms: i64,
    }

    fn read(v: serde_json::Value) -> Result<i64, String> {
        serde_json::from_value::<Config>(serde_json::json!({ "timeout_ms": v }))
            .map(|c| c.timeout_ms)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn text_and_milliseconds_read_alike_and_text_is_written() {
        assert_eq!(read("5m".into()), Ok(300_000));
        assert_eq!(read("300ms".into()), Ok(300));
        assert_eq!(read("30days".into()), Ok(2_592_000_000));
        assert_eq!(read(300_000.into()), Ok(300_000));
        assert_eq!(read("1500".into()), Ok(1500), "a number in an environment variable");
        assert!(read((-1).into()).unwrap_err().contains("cannot be negative"));
        assert!(read("soon".into()).unwrap_err().contains("\"soon\""));
        let text = serde_json::to_string(&Config { timeout_ms: 300_000 }).unwrap();
        assert_eq!(text, r#"{"timeout_ms":"5m"}"#);
    }
}
