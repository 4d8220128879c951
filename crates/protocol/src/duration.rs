//! Durations on the wire: a number of seconds (`30`, `0.5`) or text (`"30s"`, `"1h30m"`,
//! `"2d"`), wherever the API takes one (a create's `ttl`, an extend's `duration`, an exec's
//! `timeout`). The daemon parses the text; this type only carries either form.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A number of seconds, or text with units `d`, `h`, `m`, `s` (`"1h30m"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    /// Seconds; fractions allowed where the field allows them.
    Seconds(f64),
    /// Text: whole numbers with units, largest first (`1d2h`, `90s`).
    Text(String),
}

impl utoipa::PartialSchema for DurationValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .exclusive_minimum(Some(0.0))
                    .description(Some("seconds")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))
                    .description(Some("whole numbers with units, largest first: `1h30m`")),
            )
            .description(Some(
                "A duration: a number of seconds, or text with units d, h, m, s",
            ))
            .into()
    }
}

impl ToSchema for DurationValue {}

impl From<&str> for DurationValue {
    fn from(text: &str) -> DurationValue {
        DurationValue::Text(text.to_owned())
    }
}

impl From<String> for DurationValue {
    fn from(text: String) -> DurationValue {
        DurationValue::Text(text)
    }
}

impl From<f64> for DurationValue {
    fn from(seconds: f64) -> DurationValue {
        DurationValue::Seconds(seconds)
    }
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationValue::Seconds(seconds) => write!(f, "{seconds}s"),
            DurationValue::Text(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_form_reads() {
        let n: DurationValue = serde_json::from_str("30").unwrap();
        assert_eq!(n, DurationValue::Seconds(30.0));
        let t: DurationValue = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(t, DurationValue::Text("1h30m".into()));
        assert!(serde_json::from_str::<DurationValue>("true").is_err());
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"1h30m\"");
    }
}
