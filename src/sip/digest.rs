//! HTTP Digest authentication as SIP uses it (RFC 3261 §22, RFC 7616, RFC 8760; RFC 2617 and RFC 2069
//! challenges still answered).
//!
//! The client side answers a trunk's 401/407 challenge: [`Challenge::parse`] reads one `WWW-Authenticate` /
//! `Proxy-Authenticate` value, [`DigestClient`] keeps the chosen challenge and the nonce count and produces
//! the `Authorization` / `Proxy-Authorization` value for each request. [`Authorization::compute`] is the
//! pure computation (tested against the RFC vectors), and [`verify`] the server-side check.
//!
//! rsip ships a digest helper, but it gets MD5-sess and the `nc` format wrong; this module replaces it.

use std::fmt;

use md5::Md5;
use rand::Rng;
use rand::distr::Alphanumeric;
use rsip::{Request, Response};
use sha2::{Digest, Sha256, Sha512_256};

use crate::sip::message::MessageHeaders;

/// What can go wrong reading a challenge or answering it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The header uses another scheme than Digest (e.g. Basic).
    #[error("not a Digest challenge")]
    NotDigest,
    /// The parameter list cannot be read.
    #[error("malformed digest parameters: {0}")]
    Malformed(&'static str),
    /// A parameter every challenge or credential carries is missing.
    #[error("missing digest parameter {0}")]
    MissingParam(&'static str),
    /// The algorithm is none of MD5, SHA-256, SHA-512-256 and their -sess forms.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The server offers qop values but neither `auth` nor `auth-int`.
    #[error("unsupported qop {0:?}")]
    UnsupportedQop(String),
    /// The response carries no challenge we can answer.
    #[error("no usable digest challenge")]
    NoChallenge,
    /// The server challenged again with the nonce we already answered and without `stale=true`: the
    /// credentials are wrong, and retrying would loop.
    #[error("credentials rejected")]
    Rejected,
    /// A request is to be authorized before any challenge was received.
    #[error("no challenge received yet")]
    NotChallenged,
}

/// A digest hash algorithm (RFC 7616 §3.3; SHA-512-256 is SHA-512/256).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5, the default when a challenge names none.
    Md5,
    /// MD5 with a session key.
    Md5Sess,
    /// SHA-256.
    Sha256,
    /// SHA-256 with a session key.
    Sha256Sess,
    /// SHA-512/256.
    Sha512_256,
    /// SHA-512/256 with a session key.
    Sha512_256Sess,
}

impl Algorithm {
    const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
    ];

    /// The token used in the `algorithm` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Reads an `algorithm` token, ignoring case.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.name().eq_ignore_ascii_case(name))
    }

    /// True for the `-sess` variants, whose A1 includes the nonce and cnonce.
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Preference when a server offers several challenges: the stronger hash wins.
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 2,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => 3,
        }
    }

    /// The lower-case hex digest of `data`.
    fn hash(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => hex::encode(Md5::digest(data)),
            Algorithm::Sha256 | Algorithm::Sha256Sess => hex::encode(Sha256::digest(data)),
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => hex::encode(Sha512_256::digest(data)),
        }
    }
}

/// A quality of protection (RFC 7616 §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop {
    /// Authentication of the method and URI.
    Auth,
    /// Authentication including the body.
    AuthInt,
}

impl Qop {
    /// The token used in the `qop` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Qop::Auth, Qop::AuthInt]
            .into_iter()
            .find(|qop| qop.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// Which header carried a challenge, and so which header answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeOrigin {
    /// `WWW-Authenticate` in a 401, answered with `Authorization`.
    Server,
    /// `Proxy-Authenticate` in a 407, answered with `Proxy-Authorization`.
    Proxy,
}

impl ChallengeOrigin {
    /// The name of the challenge header.
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeOrigin::Server => "WWW-Authenticate",
            ChallengeOrigin::Proxy => "Proxy-Authenticate",
        }
    }

    /// The name of the header that answers the challenge.
    pub fn authorization_header(self) -> &'static str {
        match self {
            ChallengeOrigin::Server => "Authorization",
            ChallengeOrigin::Proxy => "Proxy-Authorization",
        }
    }
}

/// One Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server nonce.
    pub nonce: String,
    /// Opaque data to be returned unchanged.
    pub opaque: Option<String>,
    /// The hash algorithm (MD5 when the challenge names none).
    pub algorithm: Algorithm,
    /// The qop values offered that we support; empty for an RFC 2069 challenge without `qop`.
    pub qop: Vec<Qop>,
    /// The previous nonce was stale: retry with the new one, the credentials were right.
    pub stale: bool,
}

impl Challenge {
    /// Reads a `WWW-Authenticate` or `Proxy-Authenticate` value. `userhash` and `domain` are ignored.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = DigestParams::parse(value)?;
        let get = |name: &str| params.get(name);
        let algorithm = params.algorithm()?;
        let qop = match get("qop") {
            Some(offered) => {
                let supported: Vec<Qop> = offered.split(',').filter_map(Qop::from_name).collect();
                if supported.is_empty() {
                    return Err(DigestError::UnsupportedQop(offered));
                }
                supported
            }
            None => Vec::new(),
        };
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::MissingParam("realm"))?,
            nonce: get("nonce").ok_or(DigestError::MissingParam("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            qop,
            stale: get("stale").is_some_and(|stale| stale.eq_ignore_ascii_case("true")),
        })
    }

    /// The strongest challenge of a 401 or 407 that we can answer.
    pub fn choose(response: &Response) -> Result<(ChallengeOrigin, Challenge), DigestError> {
        [ChallengeOrigin::Server, ChallengeOrigin::Proxy]
            .into_iter()
            .flat_map(|origin| {
                response
                    .header_values(origin.challenge_header())
                    .filter_map(move |value| {
                        Challenge::parse(value).ok().map(|challenge| (origin, challenge))
                    })
            })
            .max_by_key(|(_, challenge)| challenge.algorithm.strength())
            .ok_or(DigestError::NoChallenge)
    }
}

/// A user name and password for one realm.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The parameters of an `Authorization` / `Proxy-Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The user name.
    pub username: String,
    /// The realm of the challenge.
    pub realm: String,
    /// The nonce of the challenge.
    pub nonce: String,
    /// The digest-uri: the Request-URI.
    pub uri: String,
    /// The computed response, lower-case hex.
    pub response: String,
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// The client nonce (with a qop, or a -sess algorithm).
    pub cnonce: Option<String>,
    /// The opaque value of the challenge.
    pub opaque: Option<String>,
    /// The qop used; `None` for RFC 2069 style.
    pub qop: Option<Qop>,
    /// The nonce count (with a qop).
    pub nonce_count: Option<u32>,
}

impl Authorization {
    /// Answers `challenge` for a request (RFC 7616 §3.4.1). Uses qop `auth` when offered, `auth-int` when
    /// only that is offered, and no qop when the challenge has none.
    #[allow(
        clippy::too_many_arguments,
        reason = "each input is a distinct part of the digest formula"
    )]
    pub fn compute(
        challenge: &Challenge,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        nonce_count: u32,
        cnonce: &str,
    ) -> Self {
        let qop = if challenge.qop.contains(&Qop::Auth) {
            Some(Qop::Auth)
        } else {
            challenge.qop.first().copied()
        };
        let uses_cnonce = qop.is_some() || challenge.algorithm.is_session();
        let mut authorization = Authorization {
            username: credentials.username.clone(),
            realm: challenge.realm.clone(),
            nonce: challenge.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: challenge.algorithm,
            cnonce: uses_cnonce.then(|| cnonce.to_string()),
            opaque: challenge.opaque.clone(),
            qop,
            nonce_count: qop.map(|_| nonce_count),
        };
        authorization.response = authorization.expected_response(&credentials.password, method, body);
        authorization
    }

    /// The response these parameters call for, given the password, method and body.
    fn expected_response(&self, password: &str, method: &str, body: &[u8]) -> String {
        let algorithm = self.algorithm;
        let hash = |text: &str| algorithm.hash(text.as_bytes());
        let cnonce = self.cnonce.as_deref().unwrap_or_default();
        let mut ha1 = hash(&format!("{}:{}:{}", self.username, self.realm, password));
        if algorithm.is_session() {
            ha1 = hash(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        let ha2 = match self.qop {
            Some(Qop::AuthInt) => hash(&format!("{method}:{}:{}", self.uri, algorithm.hash(body))),
            _ => hash(&format!("{method}:{}", self.uri)),
        };
        match self.qop {
            Some(qop) => hash(&format!(
                "{ha1}:{}:{:08x}:{cnonce}:{}:{ha2}",
                self.nonce,
                self.nonce_count.unwrap_or_default(),
                qop.name()
            )),
            None => hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    /// Reads an `Authorization` / `Proxy-Authorization` value.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = DigestParams::parse(value)?;
        let get = |name: &str| params.get(name);
        let required = |name: &'static str| get(name).ok_or(DigestError::MissingParam(name));
        let algorithm = params.algorithm()?;
        let qop = get("qop")
            .map(|qop| Qop::from_name(&qop).ok_or(DigestError::UnsupportedQop(qop)))
            .transpose()?;
        let nonce_count = get("nc")
            .map(|nc| u32::from_str_radix(&nc, 16).map_err(|_| DigestError::Malformed("nc is not hex")))
            .transpose()?;
        Ok(Authorization {
            username: required("username")?,
            realm: required("realm")?,
            nonce: required("nonce")?,
            uri: required("uri")?,
            response: required("response")?,
            algorithm,
            cnonce: get("cnonce"),
            opaque: get("opaque"),
            qop,
            nonce_count,
        })
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Digest username={}, realm={}, nonce={}, uri={}, response={}, algorithm={}",
            quote(&self.username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(&self.uri),
            quote(&self.response),
            self.algorithm.name()
        )?;
        if let Some(cnonce) = &self.cnonce {
            write!(f, ", cnonce={}", quote(cnonce))?;
        }
        if let Some(opaque) = &self.opaque {
            write!(f, ", opaque={}", quote(opaque))?;
        }
        if let Some(qop) = self.qop {
            // RFC 7616 §3.4: qop and nc are sent as tokens, not quoted strings.
            write!(
                f,
                ", qop={}, nc={:08x}",
                qop.name(),
                self.nonce_count.unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Checks an `Authorization` value against the password (the server side, used by tests and by anything
/// that challenges). `Ok(false)` when the response or the URI does not match.
pub fn verify(
    method: &str,
    uri: &str,
    authorization: &str,
    password: &str,
    body: &[u8],
) -> Result<bool, DigestError> {
    let authorization = Authorization::parse(authorization)?;
    if authorization.uri != uri {
        return Ok(false);
    }
    let expected = authorization.expected_response(password, method, body);
    Ok(expected.eq_ignore_ascii_case(&authorization.response))
}

/// Answers the challenges of one trunk: keeps the chosen challenge and counts uses of its nonce.
#[derive(Debug, Clone)]
pub struct DigestClient {
    credentials: Credentials,
    challenge: Option<(ChallengeOrigin, Challenge)>,
    /// How many requests were authorized with the current nonce.
    nonce_count: u32,
}

impl DigestClient {
    /// A client with no challenge yet.
    pub fn new(credentials: Credentials) -> Self {
        DigestClient {
            credentials,
            challenge: None,
            nonce_count: 0,
        }
    }

    /// Takes the challenge of a 401/407. A new nonce restarts the nonce count; the same nonce again without
    /// `stale=true` means the credentials were refused ([`DigestError::Rejected`]).
    pub fn handle_challenge(&mut self, response: &Response) -> Result<(), DigestError> {
        let (origin, challenge) = Challenge::choose(response)?;
        if let Some((_, previous)) = &self.challenge
            && previous.nonce == challenge.nonce
            && self.nonce_count > 0
            && !challenge.stale
        {
            return Err(DigestError::Rejected);
        }
        self.challenge = Some((origin, challenge));
        self.nonce_count = 0;
        Ok(())
    }

    /// True once a challenge was taken, so that requests can carry credentials pre-emptively.
    pub fn is_challenged(&self) -> bool {
        self.challenge.is_some()
    }

    /// Adds the `Authorization` or `Proxy-Authorization` header to a request (replacing an older one),
    /// with a fresh random cnonce.
    pub fn authorize(&mut self, request: &mut Request) -> Result<(), DigestError> {
        let cnonce: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        self.authorize_with_cnonce(request, &cnonce)
    }

    /// [`DigestClient::authorize`] with a given cnonce, for reproducible tests.
    pub fn authorize_with_cnonce(&mut self, request: &mut Request, cnonce: &str) -> Result<(), DigestError> {
        let (origin, challenge) = self.challenge.as_ref().ok_or(DigestError::NotChallenged)?;
        self.nonce_count = self.nonce_count.wrapping_add(1);
        let method = request.method.to_string();
        let uri = request.uri.to_string();
        let authorization = Authorization::compute(
            challenge,
            &self.credentials,
            &method,
            &uri,
            &request.body,
            self.nonce_count,
            cnonce,
        );
        request.set_header(origin.authorization_header(), authorization.to_string());
        Ok(())
    }
}

fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The parameters of a Digest challenge or credential, values unquoted.
struct DigestParams(Vec<(String, String)>);

impl DigestParams {
    /// Reads `Digest name=value, name="quoted", …`.
    fn parse(value: &str) -> Result<Self, DigestError> {
        parse_scheme_params(value).map(DigestParams)
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// The `algorithm` parameter, MD5 when absent.
    fn algorithm(&self) -> Result<Algorithm, DigestError> {
        match self.get("algorithm") {
            Some(name) => Algorithm::from_name(&name).ok_or(DigestError::UnsupportedAlgorithm(name)),
            None => Ok(Algorithm::Md5),
        }
    }
}

fn parse_scheme_params(value: &str) -> Result<Vec<(String, String)>, DigestError> {
    let value = value.trim_start();
    let scheme_end = value.find(char::is_whitespace).unwrap_or(value.len());
    if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
        return Err(DigestError::NotDigest);
    }
    let mut rest = value[scheme_end..].trim_start();
    let mut params = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or(DigestError::Malformed("parameter without '='"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(DigestError::Malformed("bad parameter name"));
        }
        let after = after.trim_start();
        let (param_value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut unquoted = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => unquoted.push(c),
                        None => return Err(DigestError::Malformed("unterminated quoted string")),
                    },
                    Some((index, '"')) => break index + 1,
                    Some((_, c)) => unquoted.push(c),
                    None => return Err(DigestError::Malformed("unterminated quoted string")),
                }
            };
            (unquoted, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((name.to_string(), param_value));
        rest = after.trim_start();
        if let Some(next) = rest.strip_prefix(',') {
            rest = next.trim_start();
        } else if !rest.is_empty() {
            return Err(DigestError::Malformed("parameters not separated by ','"));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{self, MessageHeaders};

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn mufasa(password: &str) -> Credentials {
        Credentials {
            username: "Mufasa".into(),
            password: password.into(),
        }
    }

    fn rfc7616_challenge(algorithm: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={algorithm}, \
             nonce=\"{RFC7616_NONCE}\", opaque=\"{RFC7616_OPAQUE}\""
        ))
        .unwrap()
    }

    fn rfc7616_answer(algorithm: &str) -> Authorization {
        let challenge = rfc7616_challenge(algorithm);
        assert_eq!(challenge.qop, [Qop::Auth, Qop::AuthInt]);
        let credentials = mufasa("Circle of Life");
        Authorization::compute(
            &challenge,
            &credentials,
            "GET",
            "/dir/index.html",
            b"",
            1,
            RFC7616_CNONCE,
        )
    }

    #[test]
    fn rfc7616_md5_vector() {
        assert_eq!(rfc7616_answer("MD5").response, "8ca523f5e9506fed4657c9700eebdbec");
    }

    #[test]
    fn rfc7616_sha256_vector() {
        let answer = rfc7616_answer("SHA-256");
        assert_eq!(
            answer.response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let header = answer.to_string();
        assert!(header.contains(", qop=auth, nc=00000001"), "{header}");
        assert!(header.contains("algorithm=SHA-256"), "{header}");
        assert!(
            header.contains(&format!("opaque=\"{RFC7616_OPAQUE}\"")),
            "{header}"
        );
        assert_eq!(Authorization::parse(&header).unwrap(), answer);
    }

    #[test]
    fn rfc2617_md5_vector() {
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert_eq!(challenge.algorithm, Algorithm::Md5);
        let answer = Authorization::compute(
            &challenge,
            &mufasa("Circle Of Life"),
            "GET",
            "/dir/index.html",
            b"",
            1,
            "0a4f113b",
        );
        assert_eq!(answer.response, "6629fae49393a05397450978507c4ef1");
    }

    /// Expected values computed independently with Python's hashlib from the RFC 7616 §3.4.1 formulas.
    fn sip_challenge(extra: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"sip.example.net\", nonce=\"a1b2c3d4e5f6\"{extra}"
        ))
        .unwrap()
    }

    fn alice() -> Credentials {
        Credentials {
            username: "alice".into(),
            password: "s3cr3t pass".into(),
        }
    }

    const PBX_URI: &str = "sip:2001@pbx.example.net";

    #[test]
    fn md5_sess_uses_hashed_a1_with_nonce_and_cnonce() {
        let challenge = sip_challenge(", algorithm=MD5-sess, qop=\"auth\"");
        let answer = Authorization::compute(&challenge, &alice(), "INVITE", PBX_URI, b"", 1, "0a4f113b");
        // HA1 = MD5(MD5("alice:sip.example.net:s3cr3t pass") ":a1b2c3d4e5f6:0a4f113b")
        assert_eq!(answer.response, "460100c740378b94ae00d21ae53120f7");
    }

    #[test]
    fn rfc2069_challenge_without_qop_gets_no_qop_nc_or_cnonce() {
        let answer =
            Authorization::compute(&sip_challenge(""), &alice(), "INVITE", PBX_URI, b"", 1, "unused");
        assert_eq!(answer.response, "d071089cc8722eedcdf6aef2e2b768c4");
        let header = answer.to_string();
        assert!(
            !header.contains("qop") && !header.contains("nc=") && !header.contains("cnonce"),
            "{header}"
        );
    }

    #[test]
    fn sha512_256_and_auth_int_vectors() {
        let challenge = sip_challenge(", algorithm=SHA-512-256, qop=\"auth\"");
        let answer = Authorization::compute(&challenge, &alice(), "INVITE", PBX_URI, b"", 1, "0a4f113b");
        assert_eq!(
            answer.response,
            "53f773a0a6a92da113794ab9a2f3ac9a56bd3344da5763c8dacd1d370eae419c"
        );
        let auth_int = sip_challenge(", qop=\"auth-int\"");
        let answer =
            Authorization::compute(&auth_int, &alice(), "INVITE", PBX_URI, b"v=0\r\n", 1, "0a4f113b");
        assert_eq!(answer.qop, Some(Qop::AuthInt));
        assert_eq!(answer.response, "5e9bf79b57da0aebf3db201dbc218d7b");
    }

    #[test]
    fn challenge_parsing_handles_flags_escapes_and_refusals() {
        let challenge = Challenge::parse(
            "digest  realm = \"a \\\"b\\\" c\" ,nonce=\"n,1\", stale=TRUE, algorithm=sha-256, userhash=true, qop=\"auth-conf,auth\"",
        )
        .unwrap();
        assert_eq!(challenge.realm, "a \"b\" c");
        assert_eq!(challenge.nonce, "n,1");
        assert!(challenge.stale);
        assert_eq!(challenge.algorithm, Algorithm::Sha256);
        assert_eq!(challenge.qop, [Qop::Auth]);
        assert_eq!(Challenge::parse("Basic realm=\"x\""), Err(DigestError::NotDigest));
        assert_eq!(
            Challenge::parse("Digest realm=\"x\""),
            Err(DigestError::MissingParam("nonce"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", algorithm=SHA-1"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"y\", qop=\"auth-conf\""),
            Err(DigestError::UnsupportedQop(_))
        ));
        for bad in [
            "Digest realm=\"x",
            "Digest realm",
            "Digest realm=\"x\" nonce=\"y\"",
            "Digest =x",
        ] {
            assert!(Challenge::parse(bad).is_err(), "{bad}");
        }
    }

    fn challenge_response(status: u16, headers: &[(&str, &str)]) -> Response {
        let invite = message::parse(&crate::sip::fixtures::wire(crate::sip::fixtures::JSSIP_INVITE)).unwrap();
        let rsip::SipMessage::Request(invite) = invite else {
            panic!("fixture is a request")
        };
        let mut response = message::response_to(&invite, status, Some("pbx"));
        for (name, value) in headers {
            response.push_header(name, *value);
        }
        response
    }

    fn outgoing_invite() -> Request {
        let text = "INVITE sip:2001@pbx.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n\
            From: <sip:gw@192.0.2.10>;tag=1\r\nTo: <sip:2001@pbx.example.net>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n\r\n";
        match message::parse(text.as_bytes()) {
            Ok(rsip::SipMessage::Request(request)) => request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_prefers_the_strongest_challenge_and_counts_nonce_uses() {
        let response = challenge_response(
            401,
            &[
                (
                    "WWW-Authenticate",
                    "Digest realm=\"sip.example.net\", nonce=\"n1\", algorithm=MD5, qop=\"auth\"",
                ),
                (
                    "WWW-Authenticate",
                    "Digest realm=\"sip.example.net\", nonce=\"n1\", algorithm=SHA-256, qop=\"auth\"",
                ),
            ],
        );
        let mut client = DigestClient::new(alice());
        client.handle_challenge(&response).unwrap();
        let mut invite = outgoing_invite();
        client.authorize_with_cnonce(&mut invite, "c").unwrap();
        let first = Authorization::parse(invite.header_value("Authorization").unwrap()).unwrap();
        assert_eq!((first.algorithm, first.nonce_count), (Algorithm::Sha256, Some(1)));
        let header = invite.header_value("Authorization").unwrap();
        assert!(verify("INVITE", PBX_URI, header, "s3cr3t pass", b"").unwrap());
        for (method, uri, password) in [
            ("INVITE", PBX_URI, "wrong"),
            ("BYE", PBX_URI, "s3cr3t pass"),
            ("INVITE", "sip:x@y", "s3cr3t pass"),
        ] {
            assert!(
                !verify(method, uri, header, password, b"").unwrap(),
                "{method} {uri} {password}"
            );
        }

        client.authorize_with_cnonce(&mut invite, "c").unwrap();
        let second = Authorization::parse(invite.header_value("Authorization").unwrap()).unwrap();
        assert_eq!(second.nonce_count, Some(2));
        assert!(
            invite
                .header_value("Authorization")
                .unwrap()
                .contains("nc=00000002")
        );
        assert_eq!(invite.header_values("Authorization").count(), 1);
    }

    #[test]
    fn proxy_challenge_is_answered_with_proxy_authorization() {
        let response = challenge_response(407, &[("Proxy-Authenticate", "Digest realm=\"r\", nonce=\"p1\"")]);
        let mut client = DigestClient::new(alice());
        client.handle_challenge(&response).unwrap();
        let mut invite = outgoing_invite();
        client.authorize(&mut invite).unwrap();
        assert!(invite.header_value("Proxy-Authorization").is_some());
        assert!(invite.header_value("Authorization").is_none());
    }

    #[test]
    fn same_nonce_again_is_a_rejection_unless_stale() {
        let challenge = "Digest realm=\"r\", nonce=\"n1\", qop=\"auth\"";
        let response = challenge_response(401, &[("WWW-Authenticate", challenge)]);
        let mut client = DigestClient::new(alice());
        assert_eq!(
            client.authorize(&mut outgoing_invite()),
            Err(DigestError::NotChallenged)
        );
        client.handle_challenge(&response).unwrap();
        client.authorize(&mut outgoing_invite()).unwrap();
        assert_eq!(client.handle_challenge(&response), Err(DigestError::Rejected));
        let stale = challenge_response(401, &[("WWW-Authenticate", &format!("{challenge}, stale=true"))]);
        client.handle_challenge(&stale).unwrap();
        let fresh = challenge_response(
            401,
            &[(
                "WWW-Authenticate",
                "Digest realm=\"r\", nonce=\"n2\", qop=\"auth\"",
            )],
        );
        client.authorize(&mut outgoing_invite()).unwrap();
        client.handle_challenge(&fresh).unwrap();
        let mut invite = outgoing_invite();
        client.authorize(&mut invite).unwrap();
        assert!(
            invite
                .header_value("Authorization")
                .unwrap()
                .contains("nc=00000001"),
            "new nonce restarts nc"
        );
        assert_eq!(
            Challenge::choose(&challenge_response(401, &[])),
            Err(DigestError::NoChallenge)
        );
    }
}
