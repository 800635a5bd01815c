//! Where a credential stands against its expiry, and whether that is news: staff and the cloud
//! hear once when a credential enters its warning period and once when it has expired, and
//! again only for another credential (a renewal has another expiry). Pure: no I/O, no clock.

/// A credential's standing at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Further from its expiry than the warning period.
    Valid,
    /// Within the warning period.
    Expiring,
    /// Past its expiry.
    Expired,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Valid => "valid",
            Standing::Expiring => "expiring",
            Standing::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Standing> {
        [Standing::Valid, Standing::Expiring, Standing::Expired]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// The standing of a credential valid until `not_after_ms`, at `now_ms`, warned about
/// `warning_ms` ahead.
pub fn standing(not_after_ms: i64, now_ms: i64, warning_ms: i64) -> Standing {
    if now_ms >= not_after_ms {
        Standing::Expired
    } else if not_after_ms - now_ms <= warning_ms {
        Standing::Expiring
    } else {
        Standing::Valid
    }
}

/// Whether `standing` of the credential valid until `not_after_ms` is to be told, given what
/// was told last (`recorded`: that credential's expiry and standing).
pub fn due(recorded: Option<(i64, Standing)>, not_after_ms: i64, standing: Standing) -> bool {
    standing != Standing::Valid && recorded != Some((not_after_ms, standing))
}

/// Whole days from `now_ms` to `not_after_ms`, rounded down; negative once past.
pub fn days_left(not_after_ms: i64, now_ms: i64) -> i64 {
    (not_after_ms - now_ms).div_euclid(86_400_000)
}

/// The `exp` of a JWT (RFC 7519 §4.1.4, seconds) in ms; none for a token that is not a JWT
/// or has no `exp`. The signature is not checked: this is the gateway's own credential, read
/// only to know when to renew it.
pub fn jwt_expiry(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_i64()?.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_jwt_tells_its_expiry_and_an_opaque_token_none() {
        // {"alg":"none"}.{"sub":"gateway","exp":1798761600}.
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJnYXRld2F5IiwiZXhwIjoxNzk4NzYxNjAwfQ.";
        assert_eq!(jwt_expiry(jwt), Some(1_798_761_600_000));
        assert_eq!(jwt_expiry(&format!("{jwt}\n")), Some(1_798_761_600_000));
        assert_eq!(jwt_expiry("opaque-token-4711"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
        // {"alg":"none"}.{"sub":"gateway"}: no exp.
        assert_eq!(
            jwt_expiry("eyJhbGciOiJub25lIn0.eyJzdWIiOiJnYXRld2F5In0."),
            None
        );
    }

    fn check(recorded: Option<(i64, Standing)>, not_after: i64, now: i64) -> (Standing, bool) {
        let s = standing(not_after, now, 14 * DAY);
        (s, due(recorded, not_after, s))
    }

    #[test]
    fn a_credential_is_told_once_ahead_and_once_on_expiry() {
        let end = 100 * DAY;
        assert_eq!(check(None, end, 80 * DAY), (Standing::Valid, false));
        assert_eq!(check(None, end, 86 * DAY), (Standing::Expiring, true));
        let told = Some((end, Standing::Expiring));
        assert_eq!(check(told, end, 90 * DAY), (Standing::Expiring, false));
        assert_eq!(check(told, end, end), (Standing::Expired, true));
        let told = Some((end, Standing::Expired));
        assert_eq!(check(told, end, end + DAY), (Standing::Expired, false));
    }

    #[test]
    fn a_renewal_expiring_soon_again_is_told_again() {
        let told = Some((100 * DAY, Standing::Expiring));
        assert_eq!(check(told, 101 * DAY, 95 * DAY), (Standing::Expiring, true));
    }

    #[test]
    fn days_left_round_down_and_go_negative() {
        assert_eq!(days_left(3 * DAY + 5, 0), 3);
        assert_eq!(days_left(3 * DAY - 5, 0), 2);
        assert_eq!(days_left(0, 1), -1);
    }
}
