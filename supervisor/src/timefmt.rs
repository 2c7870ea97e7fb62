//! Timestamps in the formats AWS uses on the wire.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

/// `LastModified` as Lambda returns it: `2024-01-31T12:34:56.789+0000`.
const LAMBDA_TS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000");

/// SigV4 `X-Amz-Date`: `20150830T123600Z`.
const AMZ_DATE: &[FormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn lambda_timestamp(t: OffsetDateTime) -> String {
    t.format(LAMBDA_TS)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000+0000".to_owned())
}

/// Parses an `X-Amz-Date` value; `None` when malformed.
pub fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, AMZ_DATE)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

pub fn format_amz_date(t: OffsetDateTime) -> String {
    t.format(AMZ_DATE).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_round_trip() {
        let t = parse_amz_date("20150830T123600Z").expect("valid");
        assert_eq!(t.unix_timestamp(), 1_440_938_160);
        assert_eq!(format_amz_date(t), "20150830T123600Z");
        assert!(parse_amz_date("2015-08-30T12:36:00Z").is_none());
        assert!(parse_amz_date("20150830T123600").is_none());
    }

    #[test]
    fn lambda_format() {
        let t = OffsetDateTime::from_unix_timestamp(1_440_938_160).expect("ts");
        assert_eq!(lambda_timestamp(t), "2015-08-30T12:36:00.000+0000");
    }
}
