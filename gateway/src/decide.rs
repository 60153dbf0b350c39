//! The per-request decision, as a pure function: what a request on a route gets, given
//! its auth mode, its origin check and what is known of its session.
//!
//! The proxy calls [`decide`] until it answers something other than
//! [`Step::Lookup`]: first with what the request presents, then (if asked) with the
//! lookup's outcome. Nothing else decides whether a request is forwarded, so the table
//! test below is the whole policy.

use std::sync::Arc;

use exchange::{Freshness, SessionLookup};

use crate::config::AuthMode;
use crate::respond::Refusal;

/// What the route and the request say, before any session lookup.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The route's auth mode.
    pub auth: AuthMode,
    /// Whether the route re-checks sessions in Redis on every request.
    pub critical: bool,
    /// An unsafe method from an origin not allowed (only refused when the request
    /// carries the session cookie).
    pub cross_site: bool,
    /// Where a browser navigation without a session is sent, if anywhere.
    pub login: Option<&'a Arc<str>>,
}

/// What is known of the request's session.
#[derive(Debug)]
pub enum Session {
    /// No session cookie.
    Absent,
    /// A session cookie, not yet looked up.
    Presented,
    /// The lookup's answer.
    Looked(SessionLookup),
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Look the session up, this fresh.
    Lookup(Freshness),
    /// Forward the request, with a token for the session or without one.
    Forward {
        /// Whether a token is minted and attached.
        token: bool,
    },
    /// Answer the request with this refusal.
    Refuse(Refusal),
}

/// The decision for `request` given what is known of its `session`.
pub fn decide(request: &Request<'_>, session: &Session) -> Step {
    let has_cookie = !matches!(session, Session::Absent);
    if has_cookie && request.cross_site {
        return Step::Refuse(Refusal::Forbidden);
    }
    let no_session = || match request.auth {
        AuthMode::Required => Step::Refuse(match request.login {
            Some(url) => Refusal::LoginRedirect(url.clone()),
            None => Refusal::Unauthenticated,
        }),
        AuthMode::Optional | AuthMode::None => Step::Forward { token: false },
    };
    match (request.auth, session) {
        (AuthMode::None, _) => Step::Forward { token: false },
        (_, Session::Absent) => no_session(),
        (_, Session::Presented) => Step::Lookup(if request.critical {
            Freshness::Live
        } else {
            Freshness::Cached
        }),
        (_, Session::Looked(SessionLookup::Valid(_))) => Step::Forward { token: true },
        // Fail closed: without Redis nothing is forwarded as this session or as anyone.
        (_, Session::Looked(SessionLookup::Unavailable(_))) => Step::Refuse(Refusal::Unavailable),
        (
            _,
            Session::Looked(
                SessionLookup::Anonymous
                | SessionLookup::Missing
                | SessionLookup::Expired
                | SessionLookup::Revoked
                | SessionLookup::Malformed(_),
            ),
        ) => no_session(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use exchange::Outcome;

    /// One row per combination: auth × critical × cross-site × login URL × session.
    #[test]
    fn every_combination() {
        let login: Arc<str> = "/login".into();
        let lookups = [
            Outcome::Valid,
            Outcome::Anonymous,
            Outcome::Missing,
            Outcome::Expired,
            Outcome::Revoked,
            Outcome::Malformed,
            Outcome::Unavailable,
        ];
        let mut rows = 0;
        for auth in [AuthMode::Required, AuthMode::Optional, AuthMode::None] {
            for critical in [false, true] {
                for cross_site in [false, true] {
                    for with_login in [false, true] {
                        let request = Request {
                            auth,
                            critical,
                            cross_site,
                            login: with_login.then_some(&login),
                        };
                        let mut sessions =
                            vec![(None, Session::Absent), (None, Session::Presented)];
                        sessions.extend(lookups.iter().map(|o| (Some(*o), looked(*o))));
                        for (outcome, session) in sessions {
                            let got = decide(&request, &session);
                            let want = expected(&request, outcome, &session);
                            assert_eq!(got, want, "{request:?} {session:?}");
                            rows += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(rows, 3 * 2 * 2 * 2 * 9);
    }

    /// Anchors for the oracle below, written out literally: if the oracle and `decide`
    /// drifted together, these would still catch it.
    #[test]
    fn literal_rows() {
        let login: Arc<str> = "/login".into();
        let req = |auth, critical, cross_site, with_login: bool| Request {
            auth,
            critical,
            cross_site,
            login: with_login.then_some(&login),
        };
        use AuthMode::{None as NoAuth, Optional, Required};
        let rows: Vec<(Request<'_>, Session, Step)> = vec![
            (
                req(Required, false, false, false),
                Session::Absent,
                Step::Refuse(Refusal::Unauthenticated),
            ),
            (
                req(Required, false, false, true),
                Session::Absent,
                Step::Refuse(Refusal::LoginRedirect(login.clone())),
            ),
            (
                req(Required, false, false, false),
                Session::Presented,
                Step::Lookup(Freshness::Cached),
            ),
            (
                req(Required, true, false, false),
                Session::Presented,
                Step::Lookup(Freshness::Live),
            ),
            (
                req(Required, true, true, false),
                Session::Presented,
                Step::Refuse(Refusal::Forbidden),
            ),
            (
                req(Required, true, true, false),
                Session::Absent,
                Step::Refuse(Refusal::Unauthenticated),
            ),
            (
                req(NoAuth, false, true, false),
                looked(Outcome::Valid),
                Step::Refuse(Refusal::Forbidden),
            ),
            (
                req(NoAuth, false, false, false),
                Session::Presented,
                Step::Forward { token: false },
            ),
            (
                req(Optional, false, false, true),
                Session::Absent,
                Step::Forward { token: false },
            ),
            (
                req(Optional, false, false, false),
                looked(Outcome::Revoked),
                Step::Forward { token: false },
            ),
            (
                req(Optional, false, false, false),
                looked(Outcome::Unavailable),
                Step::Refuse(Refusal::Unavailable),
            ),
            (
                req(Optional, true, false, false),
                looked(Outcome::Valid),
                Step::Forward { token: true },
            ),
            (
                req(Required, true, false, false),
                looked(Outcome::Valid),
                Step::Forward { token: true },
            ),
            (
                req(Required, false, false, false),
                looked(Outcome::Anonymous),
                Step::Refuse(Refusal::Unauthenticated),
            ),
            (
                req(Required, false, false, true),
                looked(Outcome::Malformed),
                Step::Refuse(Refusal::LoginRedirect(login.clone())),
            ),
            (
                req(Required, true, false, true),
                looked(Outcome::Unavailable),
                Step::Refuse(Refusal::Unavailable),
            ),
        ];
        for (request, session, want) in rows {
            assert_eq!(decide(&request, &session), want, "{request:?} {session:?}");
        }
    }

    /// The policy, spelled out row by row in SPEC's words.
    fn expected(r: &Request<'_>, outcome: Option<Outcome>, session: &Session) -> Step {
        let unauthenticated = || match r.login {
            Some(url) => Step::Refuse(Refusal::LoginRedirect(url.clone())),
            None => Step::Refuse(Refusal::Unauthenticated),
        };
        let cookie = !matches!(session, Session::Absent);
        // "unsafe method with a session cookie and an Origin not allowed": 403, whatever
        // the route.
        if cookie && r.cross_site {
            return Step::Refuse(Refusal::Forbidden);
        }
        if r.auth == AuthMode::None {
            return Step::Forward { token: false };
        }
        match (outcome, session) {
            (None, Session::Presented) if r.critical => Step::Lookup(Freshness::Live),
            (None, Session::Presented) => Step::Lookup(Freshness::Cached),
            (Some(Outcome::Valid), _) => Step::Forward { token: true },
            (Some(Outcome::Unavailable), _) => Step::Refuse(Refusal::Unavailable),
            _ if r.auth == AuthMode::Required => unauthenticated(),
            _ => Step::Forward { token: false },
        }
    }

    /// A lookup answer of each kind (a valid one needs a real session).
    fn looked(outcome: Outcome) -> Session {
        Session::Looked(match outcome {
            Outcome::Valid => SessionLookup::Valid(valid()),
            Outcome::Anonymous => SessionLookup::Anonymous,
            Outcome::Missing => SessionLookup::Missing,
            Outcome::Expired => SessionLookup::Expired,
            Outcome::Revoked => SessionLookup::Revoked,
            Outcome::Malformed => SessionLookup::Malformed(exchange::Malformed::Signature),
            Outcome::Unavailable => SessionLookup::Unavailable(exchange::Error::Store {
                op: "GET",
                message: "down".into(),
                timeout: true,
            }),
        })
    }

    fn valid() -> exchange::ValidSession {
        use exchange::store::SessionStore as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Arc::new(exchange::store::memory::MemoryStore::new());
        keys::install_crypto_provider();
        let now = keys::unix_now();
        let record = keys::generate(keys::Algorithm::Es256, now, now).unwrap();
        let set = keys::KeySet::build(&[record], now, &keys::RotationPolicy::default()).unwrap();
        let metrics = Arc::new(exchange::Metrics::unregistered());
        let minter =
            exchange::Minter::new(Arc::new(keys::Keyring::new(set)), "iss", metrics.clone());
        let ex = exchange::Exchange::new(
            store.clone(),
            exchange::SessionSettings::default(),
            minter,
            metrics,
        );
        let cookie = "abcdefghijklmnopqrstuvwxyz012345";
        let id = ex.session_id(cookie).unwrap();
        rt.block_on(async {
            let key = ex.keyspace().session_key(&id);
            store
                .put(&key, br#"{"sub":"u"}"#, std::time::Duration::from_secs(60))
                .await
                .unwrap();
            match ex.lookup(cookie, Freshness::Live).await {
                SessionLookup::Valid(v) => v,
                other => panic!("{other:?}"),
            }
        })
    }
}
