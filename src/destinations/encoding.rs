//! Payload encodings (`encoding = "trailkeep" | "grantex"`): what one event
//! looks like in a destination's payload. Not the wire format around it
//! (each destination's own), nor compression (object destinations).

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The stored event, chain fields included.
    #[default]
    Trailkeep,
    /// `{id, type, createdAt, data}`, as the Grantex tools write.
    Grantex,
}

impl Encoding {
    /// Returns the encoding a config names (`None`: the default).
    pub fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("trailkeep") => Some(Self::Trailkeep),
            Some("grantex") => Some(Self::Grantex),
            Some(_) => None,
        }
    }
}

/// Returns the payload of one stored event (`json`) in `encoding`.
pub fn encode(json: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Trailkeep => json.to_owned(),
        Encoding::Grantex => {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let mut out = serde_json::json!({
                "id": v["id"],
                "type": v["type"],
                "createdAt": v["time"],
            });
            if !v["data"].is_null() {
                out["data"] = v["data"].clone();
            }
            out.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn grantex_encoding_has_the_grantex_shape() {
        let stored = r#"{"actor":{"id":"u"},"data":{"k":1},"hash":"ab","id":"e1","prev":"00","received":"r","seq":3,"stream":"s","time":"2026-01-01T00:00:00Z","type":"grant.created"}"#;
        let g: serde_json::Value =
            serde_json::from_str(&encode(stored, Encoding::Grantex)).unwrap();
        assert_eq!(
            g,
            serde_json::json!({"id":"e1","type":"grant.created","createdAt":"2026-01-01T00:00:00Z","data":{"k":1}})
        );
        assert_eq!(encode(stored, Encoding::Trailkeep), stored);
    }
}
