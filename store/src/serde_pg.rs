//! How PostgreSQL's types (from the `pg` crate, which has no serde) appear in the
//! repository's JSON records, as `#[serde(with = …)]` modules.
//!
//! Each keeps the form the records had when these fields were plain strings and numbers,
//! so that typed records are byte-identical to the old ones (`tests/record_fixtures.rs`):
//! an [`Lsn`] is its text form (`"0/9000028"`), a [`TimelineId`] and a [`SystemId`] are
//! JSON numbers. The JSON form is the repository's format, so it is decided here, in
//! `store`, and not in `pg`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pg::{Lsn, SystemId, TimelineId};

/// An [`Lsn`] as PostgreSQL's text, `"16/B374D848"`.
pub mod lsn {
    use super::*;

    /// Writes the text form.
    pub fn serialize<S: Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(lsn)
    }

    /// Reads the text form, strictly (`X/X`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An optional [`Lsn`] as text (use with `default, skip_serializing_if = "Option::is_none"`).
pub mod opt_lsn {
    use super::*;

    /// Writes the text form, or `null`.
    pub fn serialize<S: Serializer>(lsn: &Option<Lsn>, s: S) -> Result<S::Ok, S::Error> {
        match lsn {
            Some(lsn) => s.collect_str(lsn),
            None => s.serialize_none(),
        }
    }

    /// Reads the text form, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Lsn>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// A [`TimelineId`] as a JSON number.
pub mod timeline {
    use super::*;

    /// Writes the number.
    pub fn serialize<S: Serializer>(t: &TimelineId, s: S) -> Result<S::Ok, S::Error> {
        t.0.serialize(s)
    }

    /// Reads the number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TimelineId, D::Error> {
        u32::deserialize(d).map(TimelineId)
    }
}

/// A [`SystemId`] as a JSON number.
pub mod system_id {
    use super::*;

    /// Writes the number.
    pub fn serialize<S: Serializer>(id: &SystemId, s: S) -> Result<S::Ok, S::Error> {
        id.0.serialize(s)
    }

    /// Reads the number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemId, D::Error> {
        u64::deserialize(d).map(SystemId)
    }
}

/// An optional [`SystemId`] as a JSON number (use with `default, skip_serializing_if`).
pub mod opt_system_id {
    use super::*;

    /// Writes the number, or `null`.
    pub fn serialize<S: Serializer>(id: &Option<SystemId>, s: S) -> Result<S::Ok, S::Error> {
        id.map(|id| id.0).serialize(s)
    }

    /// Reads the number, or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemId>, D::Error> {
        Option::<u64>::deserialize(d).map(|id| id.map(SystemId))
    }
}
