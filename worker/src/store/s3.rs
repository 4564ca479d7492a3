//! The object store on S3 or an S3-compatible service (MinIO, Garage, R2):
//! endpoint, region and path-style addressing from the settings, credentials
//! from the standard AWS chain. The SDK retries transient failures with
//! exponential backoff; what still fails is classified for the job's fate.

use super::{ObjectMeta, ObjectStore, Presign, StoreError};
use crate::config::StoreSettings;
use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct S3Store {
    client: Client,
    /// Signs URLs for the public endpoint (the one clients reach).
    presigner: Client,
    bucket: String,
}

impl S3Store {
    pub async fn new(s: &StoreSettings) -> Result<Self, StoreError> {
        let public = match s.public_endpoint.is_empty() {
            true => &s.endpoint,
            false => &s.public_endpoint,
        };
        Ok(Self {
            client: client(s, &s.endpoint).await,
            presigner: client(s, public).await,
            bucket: s.bucket.clone(),
        })
    }

    /// GetObject, failures classified.
    async fn get(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(key, e))
    }

    fn what(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let what = self.what(key);
        match &e {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = se.err().code().unwrap_or("").to_string();
                let reason = format!(
                    "{} ({status})",
                    se.err()
                        .message()
                        .map_or(code.clone(), |m| format!("{code}: {m}"))
                );
                match classify_status(status, &code) {
                    Class::NotFound => StoreError::NotFound(what),
                    Class::Transient => StoreError::Transient { what, reason },
                    Class::Permanent => StoreError::Permanent { what, reason },
                }
            }
            // Timeouts, connection failures, cut responses: the store may come back.
            _ => StoreError::Transient {
                what,
                reason: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
            },
        }
    }
}

async fn client(s: &StoreSettings, endpoint: &str) -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(s.region.clone()));
    if !endpoint.is_empty() {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(s.path_style)
        // Newer SDKs checksum every request; several S3-compatible
        // stores reject those headers.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(s.attempts))
        // No first-byte limit by default: a store that accepts a request
        // and never answers would hold a job forever. Stalled bodies are
        // already cut by the SDK's stalled-stream protection.
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .read_timeout(std::time::Duration::from_secs(s.response_timeout_s))
                .build(),
        )
        .build();
    Client::from_conf(conf)
}

fn etag(e: Option<&str>) -> String {
    e.unwrap_or("").trim_matches('"').to_string()
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get_file(
        &self,
        key: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<ObjectMeta, StoreError> {
        let resp = self.get(key).await?;
        let meta = ObjectMeta {
            etag: etag(resp.e_tag()),
            size: resp.content_length().unwrap_or(0).max(0) as u64,
        };
        if meta.size > max_bytes {
            return Err(StoreError::TooLarge {
                what: self.what(key),
                limit: max_bytes,
            });
        }
        let local = |e: std::io::Error| StoreError::Transient {
            what: dest.display().to_string(),
            reason: e.to_string(),
        };
        let mut f = tokio::fs::File::create(dest).await.map_err(local)?;
        // The stated length was checked; the cap holds a store that lies.
        let mut body = resp
            .body
            .into_async_read()
            .take(max_bytes.saturating_add(1));
        let n =
            tokio::io::copy_buf(&mut body, &mut f)
                .await
                .map_err(|e| StoreError::Transient {
                    what: self.what(key),
                    reason: format!("download cut short: {e}"),
                })?;
        f.flush().await.map_err(local)?;
        if n != meta.size {
            return Err(StoreError::Transient {
                what: self.what(key),
                reason: format!("downloaded {n} of {} bytes", meta.size),
            });
        }
        Ok(meta)
    }

    async fn get_bytes(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let resp = match self.get(key).await {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let too_large = || StoreError::TooLarge {
            what: self.what(key),
            limit: max_bytes,
        };
        // The stated length refuses before a byte is read; the capped read
        // holds whatever a store that misstates it sends.
        if resp.content_length().unwrap_or(0).max(0) as u64 > max_bytes {
            return Err(too_large());
        }
        let mut body = Vec::new();
        resp.body
            .into_async_read()
            .take(max_bytes.saturating_add(1))
            .read_to_end(&mut body)
            .await
            .map_err(|e| StoreError::Transient {
                what: self.what(key),
                reason: e.to_string(),
            })?;
        if body.len() as u64 > max_bytes {
            return Err(too_large());
        }
        Ok(Some(body))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(r) => Ok(Some(ObjectMeta {
                etag: etag(r.e_tag()),
                size: r.content_length().unwrap_or(0).max(0) as u64,
            })),
            Err(e) => match self.classify(key, e) {
                StoreError::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<(), StoreError> {
        // One PutObject: S3 and the compatible stores make an object visible
        // whole or not at all.
        let body = ByteStream::from_path(src)
            .await
            .map_err(|e| StoreError::Transient {
                what: src.display().to_string(),
                reason: e.to_string(),
            })?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(key, e))?;
        Ok(())
    }

    async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify(key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify(prefix, e))?;
            for o in page.contents() {
                if keys.len() == max {
                    return Err(StoreError::Permanent {
                        what: self.what(prefix),
                        reason: format!("more than {max} objects under it"),
                    });
                }
                if let Some(k) = o.key() {
                    keys.push(k.to_string());
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(key, e))?;
        Ok(())
    }

    fn describe(&self, key: &str) -> String {
        self.what(key)
    }

    async fn presign(
        &self,
        method: Presign,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<String>, StoreError> {
        use aws_sdk_s3::presigning::PresigningConfig;
        let conf = PresigningConfig::expires_in(ttl).map_err(|e| StoreError::Permanent {
            what: self.what(key),
            reason: format!("cannot presign for {} s: {e}", ttl.as_secs()),
        })?;
        let signed = match method {
            Presign::Get => {
                let r = self.presigner.get_object().bucket(&self.bucket).key(key);
                r.presigned(conf).await.map_err(|e| self.classify(key, e))?
            }
            Presign::Put => {
                let r = self.presigner.put_object().bucket(&self.bucket).key(key);
                r.presigned(conf).await.map_err(|e| self.classify(key, e))?
            }
        };
        Ok(Some(signed.uri().to_string()))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    Transient,
    Permanent,
}

/// What an S3 error answer means for the job. Refusals that pass with time
/// are worth a retry: throttling and server faults, and the 400/403s of a
/// skewed clock or an expiring session token (the credential chain refreshes
/// it); other refusals (no access, no bucket, a bad request) are final.
fn classify_status(status: u16, code: &str) -> Class {
    const PASSING: &[&str] = &[
        "RequestTimeTooSkewed",
        "RequestExpired",
        "ExpiredToken",
        "TokenRefreshRequired",
        "RequestTimeout",
        "SlowDown",
        "OperationAborted",
        "InternalError",
        "ServiceUnavailable",
    ];
    match status {
        404 if code != "NoSuchBucket" => Class::NotFound,
        408 | 429 | 500..=599 => Class::Transient,
        _ if PASSING.contains(&code) => Class::Transient,
        _ => Class::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::{classify_status, Class};

    #[test]
    fn refusals_that_pass_with_time_are_retried() {
        for (status, code, want) in [
            (404, "NoSuchKey", Class::NotFound),
            (404, "NoSuchBucket", Class::Permanent),
            (403, "RequestTimeTooSkewed", Class::Transient),
            (400, "ExpiredToken", Class::Transient),
            (403, "ExpiredToken", Class::Transient),
            (400, "RequestTimeout", Class::Transient),
            (409, "OperationAborted", Class::Transient),
            (503, "SlowDown", Class::Transient),
            (500, "", Class::Transient),
            (429, "", Class::Transient),
            (403, "AccessDenied", Class::Permanent),
            (403, "InvalidAccessKeyId", Class::Permanent),
            (403, "SignatureDoesNotMatch", Class::Permanent),
            (400, "InvalidArgument", Class::Permanent),
        ] {
            assert_eq!(classify_status(status, code), want, "{status} {code}");
        }
    }
}
