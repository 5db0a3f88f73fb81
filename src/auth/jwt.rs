//! HS256 access tokens (SPEC §3): claims `sub`, `tid`, `role`, `exp`, `iat`, `jti`, 15 min.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Secret;
use crate::error::AppError;

pub const ACCESS_TOKEN_TTL_SECS: i64 = 15 * 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The company (tenant) id: the only source of a request's tenant.
    pub tid: Uuid,
    pub role: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: Uuid,
    /// The login session (refresh-token family) the token was issued for, so that a
    /// password change can end every other session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// The OAuth client the token was issued to (client credentials grant); `sub` is then
    /// the user who created the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<Uuid>,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &Secret) -> Result<Self, AppError> {
        let bytes = secret.expose().as_bytes();
        let key_error =
            |e: jsonwebtoken::errors::Error| AppError::Internal(format!("JWT key: {e}"));
        // Only HS256 is accepted: `alg: none` and algorithm substitution are refused.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        validation.leeway = 5;
        Ok(JwtKeys {
            encoding: EncodingKey::from_secret(bytes).map_err(key_error)?,
            decoding: DecodingKey::from_secret(bytes).map_err(key_error)?,
            validation,
        })
    }

    pub fn issue(
        &self,
        user: Uuid,
        company: Uuid,
        role: &str,
        session: Option<Uuid>,
    ) -> Result<(String, Claims), AppError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            tid: company,
            role: role.to_string(),
            iat: now,
            exp: now + ACCESS_TOKEN_TTL_SECS,
            jti: Uuid::new_v4(),
            sid: session,
            cid: None,
        };
        self.sign(claims)
    }

    /// A token for an OAuth client, acting for `creator` with `role`.
    pub fn issue_for_client(
        &self,
        creator: Uuid,
        company: Uuid,
        role: &str,
        client: Uuid,
    ) -> Result<(String, Claims), AppError> {
        let (_, mut claims) = self.issue(creator, company, role, None)?;
        claims.cid = Some(client);
        self.sign(claims)
    }

    fn sign(&self, claims: Claims) -> Result<(String, Claims), AppError> {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::Internal(format!("signing a token: {e}")))?;
        Ok((token, claims))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AppError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    AppError::Unauthorized("the access token has expired")
                }
                _ => AppError::Unauthorized("the access token is not valid"),
            })
    }
}
