//! serde adapters for the value types of the config file.
//!
//! Each adapter reads the TOML shape (a string, an integer of seconds) and produces the Rust type the rest of
//! the gateway uses, with an error message that `ConfigError` can put after the key name. Serialization is
//! the inverse, so `Config::to_toml` output loads back to an equal `Config`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Parses `host:port` and names the port when only the port is wrong, which is the mistake people make.
pub(super) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && let Ok(port) = port.parse::<u64>()
        && port > u64::from(u16::MAX)
        && format!("{host}:0").parse::<SocketAddr>().is_ok()
    {
        return Err(port_out_of_range(port));
    }
    Err(format!("invalid socket address {text:?}"))
}

/// The one wording for a port outside 1..=65535, shared by the deserializers and `Config::validate`.
pub(super) fn port_out_of_range(port: impl std::fmt::Display) -> String {
    format!("port {port} out of range 1..=65535")
}

/// A required socket address, written as `"ip:port"`.
pub(super) mod socket_addr {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(addr: &SocketAddr, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(addr)
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(de)?;
        parse_socket_addr(&text).map_err(D::Error::custom)
    }
}

/// A socket address where the empty string means "disabled".
pub(super) mod optional_socket_addr {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        addr: &Option<SocketAddr>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => ser.collect_str(addr),
            None => ser.serialize_str(""),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(de)?;
        if text.is_empty() {
            return Ok(None);
        }
        parse_socket_addr(&text).map(Some).map_err(D::Error::custom)
    }
}

/// A file path where the empty string means "not set".
pub(super) mod optional_path {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        path: &Option<PathBuf>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match path {
            // Paths read from TOML are UTF-8; a path set in code that is not still prints rather than failing.
            Some(path) => ser.serialize_str(&path.to_string_lossy()),
            None => ser.serialize_str(""),
        }
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        let text = String::deserialize(de)?;
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }
}

/// An IP address without a port.
pub(super) mod ip_addr {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(addr: &IpAddr, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(addr)
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<IpAddr, D::Error> {
        let text = String::deserialize(de)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("invalid IP address {text:?}")))
    }
}

/// A UDP/TCP port given as a bare integer. Zero is accepted here and refused by `Config::validate`, so a
/// config built in code gets the same check.
pub(super) mod port {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(port: &u16, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u16(*port)
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u16, D::Error> {
        let port = i64::deserialize(de)?;
        u16::try_from(port).map_err(|_| D::Error::custom(port_out_of_range(port)))
    }
}

/// Reads a non-negative integer with a message that does not mention Rust integer types.
fn non_negative<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    let value = i64::deserialize(de)?;
    u64::try_from(value).map_err(|_| D::Error::custom(format!("{value} is negative")))
}

/// TOML integers are i64; a duration set in code beyond that prints as the largest one instead of failing,
/// and validation refuses it anyway.
fn clamp_to_toml_integer(value: u128) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A duration written as whole seconds (the key name ends in `_secs`).
pub(super) mod secs {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        duration: &Duration,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.serialize_i64(clamp_to_toml_integer(u128::from(duration.as_secs())))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        non_negative(de).map(Duration::from_secs)
    }
}

/// A duration written as whole milliseconds (the key name ends in `_ms`).
pub(super) mod millis {
    use super::*;

    pub(in crate::config) fn serialize<S: Serializer>(
        duration: &Duration,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.serialize_i64(clamp_to_toml_integer(duration.as_millis()))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
        non_negative(de).map(Duration::from_millis)
    }
}
