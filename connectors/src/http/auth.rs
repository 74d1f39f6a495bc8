//! Request authentication for HTTP connectors, including OAuth2 client
//! credentials with a cached token refreshed before it expires (and once
//! more if the API answers 401 anyway).

use crate::sources::http_poll::config::Auth;
use ferry::error::ConnectorError;
use std::time::{Duration, Instant};

/// Applies an [`Auth`] to requests.
#[derive(Debug)]
pub struct Authenticator {
    auth: Option<Auth>,
    token: Option<(String, Instant)>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Refresh this long before the token's stated expiry.
const EARLY: Duration = Duration::from_secs(30);

impl Authenticator {
    pub fn new(auth: Option<Auth>) -> Self {
        Self { auth, token: None }
    }

    /// Forgets a cached OAuth2 token (after a 401).
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    /// Adds credentials to `req`, fetching an OAuth2 token first if needed.
    pub async fn apply(
        &mut self,
        client: &reqwest::Client,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ConnectorError> {
        Ok(match &self.auth {
            None => req,
            Some(Auth::Bearer { token }) => req.bearer_auth(token.expose()),
            Some(Auth::Basic { username, password }) => {
                req.basic_auth(username, Some(password.expose()))
            }
            Some(Auth::ApiKey {
                header,
                query,
                value,
            }) => {
                let mut req = req;
                if let Some(h) = header {
                    req = req.header(h.as_str(), value.expose());
                }
                if let Some(q) = query {
                    req = req.query(&[(q.as_str(), value.expose())]);
                }
                req
            }
            Some(Auth::Oauth2 { .. }) => {
                let token = self.oauth2_token(client).await?;
                req.bearer_auth(token)
            }
        })
    }

    async fn oauth2_token(&mut self, client: &reqwest::Client) -> Result<String, ConnectorError> {
        if let Some((token, until)) = &self.token {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let Some(Auth::Oauth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        }) = &self.auth
        else {
            return Err(ConnectorError::internal(
                "oauth2 token asked for without oauth2 config",
            ));
        };
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s.as_str()));
        }
        let resp = client
            .post(token_url)
            .basic_auth(client_id, Some(client_secret.expose()))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                super::transport_error("OAuth2 token request to", token_url, &e).for_connector()
            })?;
        let status = resp.status().as_u16();
        let body = super::read_capped(resp, 1 << 20, "OAuth2 token request to", token_url).await?;
        let body = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(super::status_error(
                "OAuth2 token request to",
                token_url,
                status,
                &body,
                status == 408 || status == 429 || status >= 500,
            )
            .for_connector());
        }
        let answer: TokenAnswer = serde_json::from_str(&body).map_err(|e| {
            ConnectorError::user(format!(
                "OAuth2 token answer from {} has no access_token: {e}",
                ferry::telemetry::redact::url(token_url)
            ))
            .for_connector()
        })?;
        // At least a minute (an endpoint saying `0` would otherwise be
        // asked on every call; a token that is really expired gets a 401,
        // and a fresh one then).
        let lifetime =
            Duration::from_secs(answer.expires_in.unwrap_or(300).clamp(60, 365 * 24 * 3600));
        let until = Instant::now() + lifetime.saturating_sub(EARLY);
        ferry::telemetry::redact::register_dynamic(&answer.access_token);
        self.token = Some((answer.access_token.clone(), until));
        Ok(answer.access_token)
    }
}
