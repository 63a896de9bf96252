//! Checks of the `auth` section: endpoints, token requests and responses, captures.

use super::*;

impl Checker<'_> {
    pub(super) fn auth(&mut self) {
        let scope = self.credentials_scope();
        match &self.spec.auth {
            Auth::None => {}
            Auth::ApiKey(key) => self.template("/auth/value", key.value.as_str(), &scope),
            Auth::Bearer(bearer) => self.template("/auth/token", bearer.token.as_str(), &scope),
            Auth::Basic(basic) => {
                self.template("/auth/username", basic.username.as_str(), &scope);
                if let Some(password) = &basic.password {
                    self.template("/auth/password", password.as_str(), &scope);
                }
            }
            Auth::OAuth2(oauth) => self.oauth2(oauth),
            Auth::OAuth1(oauth) => {
                self.url(
                    "/auth/request_token_url",
                    oauth.request_token_url.as_str(),
                    true,
                );
                self.url(
                    "/auth/authorization_url",
                    oauth.authorization_url.as_str(),
                    true,
                );
                self.url(
                    "/auth/access_token_url",
                    oauth.access_token_url.as_str(),
                    true,
                );
            }
        }
    }

    fn oauth2(&mut self, oauth: &OAuth2Auth) {
        match (&oauth.grant, &oauth.authorization_url) {
            (Grant::AuthorizationCode, None) => self.push(
                Problem::at(
                    "/auth",
                    "the authorization code grant needs `authorization_url`",
                )
                .on_key()
                .expected("`authorization_url`: the provider's authorization endpoint"),
            ),
            (Grant::AuthorizationCode, Some(url)) => {
                self.url("/auth/authorization_url", url.as_str(), true);
            }
            (Grant::ClientCredentials, _) => {
                if oauth.pkce != Pkce::Off {
                    self.push(
                        Problem::at(
                            "/auth/pkce",
                            "PKCE is part of the authorization code grant only",
                        )
                        .expected("`off` with `grant: client_credentials`"),
                    );
                }
            }
        }
        self.url("/auth/token_url", oauth.token_url.as_str(), true);
        for (key, url) in [
            ("refresh_url", &oauth.refresh_url),
            ("revocation_url", &oauth.revocation_url),
        ] {
            if let Some(url) = url {
                self.url(&pointer(&["auth", key]), url.as_str(), true);
            }
        }
        self.token_response("/auth/token_response", &oauth.token_response);
        let token_scope = self
            .credentials_scope()
            .only(
                "token",
                TOKEN,
                ["access_token".to_owned(), "refresh_token".to_owned()],
            )
            .only("client", CLIENT, ["id".to_owned(), "secret".to_owned()]);
        if let Refresh::Exchange { request, .. } = &oauth.refresh {
            self.token_request("/auth/refresh/request", request, &token_scope);
        }
        if let Some(revocation) = &oauth.revocation {
            if oauth.revocation_url.is_some() {
                self.push(
                    Problem::at(
                        "/auth/revocation",
                        "both `revocation_url` and `revocation` are given",
                    )
                    .on_key()
                    .expected("one of them: the RFC 7009 endpoint, or the provider's own request"),
                );
            }
            self.url("/auth/revocation/url", revocation.url.as_str(), true);
            for (group, values) in [
                ("params", &revocation.params),
                ("headers", &revocation.headers),
            ] {
                for (name, value) in values {
                    self.template(
                        &pointer(&["auth", "revocation", group, name]),
                        value.as_str(),
                        &token_scope,
                    );
                }
            }
        }
        for (index, request) in oauth.post_exchange.iter().enumerate() {
            self.token_request(
                &pointer(&["auth", "post_exchange", &index.to_string()]),
                request,
                &token_scope,
            );
        }
        for (name, capture) in &oauth.capture {
            let at = pointer(&["auth", "capture", name]);
            if !is_name(name) {
                self.push(
                    Problem::at(at.clone(), format!("`{name}` is not a valid config name"))
                        .on_key()
                        .expected(NAME_PATTERN),
                );
            }
            if self.spec.config.contains_key(name) {
                self.push(
                    Problem::at(
                        at.clone(),
                        format!("`{name}` is captured but also declared in `config`"),
                    )
                    .on_key()
                    .expected("a captured value not declared in `config`: the capture sets it"),
                );
            }
            if let Capture::TokenResponse(path) = capture {
                self.json_path(&format!("{at}/token_response"), path);
            }
        }
    }

    fn token_request(&mut self, at: &str, request: &TokenRequest, scope: &Scope) {
        self.url(&format!("{at}/url"), request.url.as_str(), true);
        for (name, value) in &request.params {
            self.template(
                &format!("{at}/params/{}", pointer_segment(name)),
                value.as_str(),
                scope,
            );
        }
        self.token_response(&format!("{at}/response"), &request.response);
    }

    fn token_response(&mut self, at: &str, response: &TokenResponse) {
        let paths = [
            ("envelope", response.envelope.as_ref()),
            ("access_token", Some(&response.access_token)),
            ("refresh_token", Some(&response.refresh_token)),
            ("expires_in", Some(&response.expires_in)),
            ("expires_at", response.expires_at.as_ref()),
            ("refresh_expires_in", response.refresh_expires_in.as_ref()),
            ("scope", Some(&response.scope)),
            ("error_message", response.error_message.as_ref()),
        ];
        for (key, path) in paths {
            if let Some(path) = path {
                self.json_path(&format!("{at}/{key}"), path);
            }
        }
        if let Some(condition) = &response.error {
            self.condition(
                &format!("{at}/error"),
                condition.as_str(),
                &Scope::default().with("response", Fields::Any),
            );
        }
    }
}
