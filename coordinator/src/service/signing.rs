//! Signed URLs: an upload's PUT and an output's GET carry their own proof
//! (HMAC-SHA256 of the method, the path and the expiry under the service's
//! secret), so a backend can hand them to a browser or a CDN without a key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signed URL's query: `?expires=<ms>&sig=<hex>`.
#[derive(serde::Deserialize)]
pub(crate) struct Signed {
    expires: i64,
    sig: String,
}

#[derive(Clone)]
pub(crate) struct Signer {
    secret: Vec<u8>,
    /// Where clients reach the service, without a trailing slash.
    public: String,
}

impl Signer {
    pub(crate) fn new(secret: &str, public: &str) -> Self {
        Self {
            secret: secret.as_bytes().to_vec(),
            public: public.trim_end_matches('/').to_string(),
        }
    }

    fn mac(&self, method: &str, path: &str, expires_ms: i64) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        m.update(format!("{method}\n{path}\n{expires_ms}").as_bytes());
        m
    }

    /// The full URL of `path` for `method`, valid until `expires_ms`.
    pub(crate) fn url(&self, method: &str, path: &str, expires_ms: i64) -> String {
        let sig = hex::encode(self.mac(method, path, expires_ms).finalize().into_bytes());
        format!("{}{path}?expires={expires_ms}&sig={sig}", self.public)
    }

    /// Whether a URL's query signs (`method`, `path`) and is still valid.
    pub(crate) fn verify_query(&self, method: &str, path: &str, q: &Signed) -> bool {
        self.verify(method, path, q.expires, &q.sig, super::db::now_ms())
    }

    /// Whether `sig` signs (`method`, `path`, `expires_ms`) and has not
    /// expired at `now_ms` (compared in constant time).
    pub(crate) fn verify(
        &self,
        method: &str,
        path: &str,
        expires_ms: i64,
        sig: &str,
        now_ms: i64,
    ) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        now_ms <= expires_ms
            && self
                .mac(method, path, expires_ms)
                .verify_slice(&sig)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_method_path_and_time_only() {
        let s = Signer::new("secret", "http://h:1/");
        let url = s.url("PUT", "/v1/uploads/up_1/data", 1000);
        assert!(url.starts_with("http://h:1/v1/uploads/up_1/data?expires=1000&sig="));
        let sig = url.rsplit("sig=").next().unwrap();
        assert!(s.verify("PUT", "/v1/uploads/up_1/data", 1000, sig, 999));
        assert!(!s.verify("PUT", "/v1/uploads/up_1/data", 1000, sig, 1001));
        assert!(!s.verify("GET", "/v1/uploads/up_1/data", 1000, sig, 999));
        assert!(!s.verify("PUT", "/v1/uploads/up_2/data", 1000, sig, 999));
        assert!(!s.verify("PUT", "/v1/uploads/up_1/data", 2000, sig, 999));
        assert!(!Signer::new("other", "x").verify("PUT", "/v1/uploads/up_1/data", 1000, sig, 999));
    }
}
