//! [`JwtUser`]: the user named by a verified JWT's `sub` claim (feature `jwt`).

use http::header::AUTHORIZATION;
use http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::user::{UserExtractor, UserId, UserRef};
use crate::error::ConfigError;

/// Reads `Authorization: Bearer <token>`, verifies the token's signature and its `exp`/`nbf`
/// (with the default 60 s leeway), and takes the user from `sub`.
///
/// A missing, malformed, badly signed, expired or unsigned (`alg: none`) token means no user.
///
/// ```
/// use integration_cache::http::{JwtUser, UserExtractor};
/// use jsonwebtoken::{encode, EncodingKey, Header};
///
/// let secret = b"demo-secret";
/// let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
/// let claims = serde_json::json!({ "sub": "ann", "exp": exp });
/// let token = encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap();
///
/// let request = http::Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap();
/// let (parts, _) = request.into_parts();
/// assert_eq!(JwtUser::hs256(secret).user(&parts).unwrap().as_str(), "ann");
/// assert!(JwtUser::hs256(b"another-secret").user(&parts).is_none());
/// ```
#[derive(Clone)]
pub struct JwtUser {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtUser")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
}

impl JwtUser {
    /// Tokens signed with HMAC-SHA256 and `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Tokens signed with the RSA (RS256) or ECDSA (ES256) key whose public half is `pem`.
    ///
    /// # Errors
    ///
    /// `pem` is neither an RSA nor an EC public key in PEM form.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            return Ok(Self::new(key, Algorithm::ES256));
        }
        Err(ConfigError::new(
            "jwt_public_key",
            "not an RSA or EC public key in PEM form (-----BEGIN PUBLIC KEY-----)",
        ))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key, validation }
    }
}

impl UserExtractor for JwtUser {
    fn user<'r>(&self, request: &'r Parts) -> Option<UserRef<'r>> {
        let header = request.headers.get(AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let data =
            jsonwebtoken::decode::<Claims>(token.trim(), &self.key, &self.validation).ok()?;
        UserId::new(&data.claims.sub).map(UserRef::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn parts(authorization: &str) -> Parts {
        http::Request::get("/")
            .header("authorization", authorization)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap()
    }

    #[test]
    fn only_valid_tokens_name_a_user() {
        let extractor = JwtUser::hs256(b"s3cret");
        let user = |auth: &str| extractor.user(&parts(auth)).map(|u| u.as_str().to_owned());
        let good = token(serde_json::json!({"sub": "ann", "exp": now() + 600}));
        assert_eq!(user(&format!("Bearer {good}")).as_deref(), Some("ann"));
        assert_eq!(user(&format!("bearer {good}")).as_deref(), Some("ann"));
        let expired = token(serde_json::json!({"sub": "ann", "exp": now() - 3600}));
        assert_eq!(user(&format!("Bearer {expired}")), None, "expired");
        let no_exp = token(serde_json::json!({"sub": "ann"}));
        assert_eq!(user(&format!("Bearer {no_exp}")), None, "exp is required");
        let empty_sub = token(serde_json::json!({"sub": "", "exp": now() + 600}));
        assert_eq!(
            user(&format!("Bearer {empty_sub}")),
            None,
            "an empty sub is no user"
        );
        // alg: none, no signature.
        let unsigned = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDB9"
        );
        assert_eq!(user(&format!("Bearer {unsigned}")), None, "unsigned");
        assert_eq!(user(&format!("Basic {good}")), None, "not a bearer token");
        assert_eq!(user("Bearer not.a.jwt"), None);
        let other_key = encode(
            &Header::default(),
            &serde_json::json!({"sub": "ann", "exp": now() + 600}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(
            user(&format!("Bearer {other_key}")),
            None,
            "wrong signature"
        );
    }

    #[test]
    fn a_bad_public_key_is_a_config_error() {
        let err = JwtUser::public_key_pem(b"not a key").unwrap_err();
        assert_eq!(err.setting(), "jwt_public_key");
    }
}
