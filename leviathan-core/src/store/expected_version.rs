//! What a writer expects of a stream before its batch may land.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a writer expects of a stream before its batch may land.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No expectation.
    #[default]
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has exactly this many events.
    Exact(u64),
}

impl ExpectedVersion {
    /// The expectation that a stream is at `version` (0 meaning no stream).
    pub fn at(version: u64) -> Self {
        if version == 0 {
            Self::NoStream
        } else {
            Self::Exact(version)
        }
    }

    /// True when a stream at `actual` meets this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// On the wire: `"any"`, `"no_stream"` or a version number.
impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Any => serializer.serialize_str("any"),
            Self::NoStream => serializer.serialize_str("no_stream"),
            Self::Exact(n) => serializer.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(u64),
            Word(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Number(0) => Ok(Self::NoStream),
            Wire::Number(n) => Ok(Self::Exact(n)),
            Wire::Word(w) if w == "any" => Ok(Self::Any),
            Wire::Word(w) if w == "no_stream" => Ok(Self::NoStream),
            Wire::Word(w) => Err(serde::de::Error::custom(format!(
                "expected version must be \"any\", \"no_stream\" or a number, got \"{w}\""
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_wire() {
        for (v, json) in [
            (ExpectedVersion::Any, "\"any\""),
            (ExpectedVersion::NoStream, "\"no_stream\""),
            (ExpectedVersion::Exact(3), "3"),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), json);
            assert_eq!(serde_json::from_str::<ExpectedVersion>(json).unwrap(), v);
        }
        assert_eq!(
            serde_json::from_str::<ExpectedVersion>("0").unwrap(),
            ExpectedVersion::NoStream
        );
        assert!(
            serde_json::from_str::<ExpectedVersion>("\"later\"")
                .unwrap_err()
                .to_string()
                .contains("no_stream")
        );
    }

    #[test]
    fn expectations_match() {
        assert!(ExpectedVersion::Any.matches(5));
        assert!(ExpectedVersion::NoStream.matches(0));
        assert!(!ExpectedVersion::NoStream.matches(1));
        assert!(ExpectedVersion::Exact(2).matches(2));
        assert!(!ExpectedVersion::Exact(2).matches(3));
        assert_eq!(ExpectedVersion::at(0), ExpectedVersion::NoStream);
    }
}
