//! Parsing of the `Authorization: AWS4-HMAC-SHA256 ...` header.

use super::AuthError;

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub access_key_id: String,
    pub scope_date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: [u8; 32],
}

impl ParsedAuthorization {
    /// `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.scope_date, self.region, self.service
        )
    }
}

fn malformed(msg: impl Into<String>) -> AuthError {
    AuthError::Malformed(msg.into())
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/lambda/aws4_request,
/// SignedHeaders=host;x-amz-date, Signature=<64 hex>`.
pub fn parse_authorization(value: &str) -> Result<ParsedAuthorization, AuthError> {
    let value = value.trim();
    let (algorithm, rest) = value.split_once(char::is_whitespace).ok_or_else(|| {
        malformed("expected '<algorithm> Credential=..., SignedHeaders=..., Signature=...'")
    })?;
    if algorithm != "AWS4-HMAC-SHA256" {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| malformed(format!("component '{part}' is not key=value")))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            other => return Err(malformed(format!("unknown component '{other}'"))),
        };
        if slot.replace(v).is_some() {
            return Err(malformed(format!("duplicate component '{k}'")));
        }
    }
    let credential = credential.ok_or_else(|| malformed("missing Credential"))?;
    let signed = signed.ok_or_else(|| malformed("missing SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("missing Signature"))?;

    let fields: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = fields[..] else {
        return Err(malformed(
            "Credential must be AKID/date/region/service/aws4_request",
        ));
    };
    if terminator != "aws4_request" {
        return Err(malformed("credential scope must end with aws4_request"));
    }
    if access_key_id.is_empty() {
        return Err(malformed("empty access key id"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("credential date must be YYYYMMDD"));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
    if signed_headers.iter().any(|h| {
        h.is_empty()
            || h.bytes()
                .any(|b| b.is_ascii_uppercase() || b.is_ascii_whitespace())
    }) {
        return Err(malformed(
            "SignedHeaders must be lowercase names separated by ';'",
        ));
    }
    let mut sig = [0u8; 32];
    hex::decode_to_slice(signature, &mut sig)
        .map_err(|_| malformed("Signature must be 64 hex digits"))?;
    Ok(ParsedAuthorization {
        access_key_id: access_key_id.to_owned(),
        scope_date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    #[test]
    fn parses_sdk_header() {
        let p = parse_authorization(GOOD).expect("parses");
        assert_eq!(p.access_key_id, "AKIDEXAMPLE");
        assert_eq!(p.scope(), "20150830/us-east-1/service/aws4_request");
        assert_eq!(p.signed_headers, vec!["host", "x-amz-date"]);
        assert_eq!(p.signature[0], 0x5f);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet =
            b"AWS4-HMAC-SHA256 Credential=/,;= SignedHeaders Signature 0123456789abcdef\xff";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 160) as usize;
            let s: String = (0..len)
                .map(|i| char::from(alphabet[((x >> (i % 50)) as usize + i) % alphabet.len()]))
                .collect();
            let _ = parse_authorization(&s);
        }
        // Mutations of a valid header.
        for i in 0..GOOD.len() {
            let mut b = GOOD.as_bytes().to_vec();
            b[i] = b'/';
            let _ = parse_authorization(&String::from_utf8_lossy(&b));
            let _ = parse_authorization(&GOOD[..i]);
        }
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA1 Credential=a/20150830/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/2015/r/s/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws5, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, SignedHeaders=Host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            "AWS4-HMAC-SHA256 Credential=a/20150830/r/s/aws4_request, Credential=a/20150830/r/s/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ] {
            assert!(parse_authorization(bad).is_err(), "accepted {bad:?}");
        }
    }
}
