//! OpenAPI types of our own.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

/// A decimal number written as a JSON string, such as money (`"2500000.00"`). Only a
/// string is accepted: a JSON number is refused, since money must never pass through a
/// float on its way in (poem-openapi's plain `String` would turn `12.5` into `"12.5"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecimalString(pub String);

impl DecimalString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Type for DecimalString {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string_decimal".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new_with_format("string", "decimal");
        schema.pattern = Some(r"^\d+(\.\d{1,2})?$".to_string());
        schema.example = Some(Value::String("2500000.00".into()));
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for DecimalString {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(DecimalString(s)),
            other => Err(ParseError::custom(format!(
                "expected a decimal string such as \"2500000.00\", found {other}"
            ))),
        }
    }
}

impl ToJSON for DecimalString {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// The text of an optional decimal field, for the domain's parsers.
pub fn decimal_text(value: &Option<DecimalString>) -> Option<&str> {
    value.as_ref().map(DecimalString::as_str)
}
