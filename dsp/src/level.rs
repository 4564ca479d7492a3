//! Levels in JSON. A level of digital silence, or of a span too short for a
//! 400 ms loudness block, is -inf dB; JSON has no -inf (serde_json writes
//! null, then refuses to read null as a number). Level fields go through
//! this module: -inf is written as `null` ("below the gate") and `null` is
//! read back as -inf, so every document LoopMind writes reads back.
//!
//! Use as `#[serde(with = "loopmind_dsp::level")]`.

use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        // NaN or +inf would be a bug upstream; null is still better than a
        // document nobody can read.
        debug_assert!(*v == f64::NEG_INFINITY, "level {v} is not a level");
        s.serialize_none()
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct L {
        #[serde(with = "super")]
        v: f64,
    }

    #[test]
    fn silence_round_trips_as_null() {
        let s = serde_json::to_string(&L {
            v: f64::NEG_INFINITY,
        })
        .unwrap();
        assert_eq!(s, r#"{"v":null}"#);
        assert_eq!(serde_json::from_str::<L>(&s).unwrap().v, f64::NEG_INFINITY);
        let s = serde_json::to_string(&L { v: -23.5 }).unwrap();
        assert_eq!(serde_json::from_str::<L>(&s).unwrap(), L { v: -23.5 });
    }
}
