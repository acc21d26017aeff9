//! Bearer tokens on the wire: the `authorization: Bearer <token>` header every call carries.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The header.
pub const AUTHORIZATION: &str = "authorization";

/// A client-side interceptor that adds the token to every request.
#[derive(Clone, Default)]
pub struct Bearer {
    header: Option<AsciiMetadataValue>,
}

impl Bearer {
    /// Presents `token` (none: calls go without, and the scheduler refuses them).
    pub fn new(token: Option<&str>) -> Result<Bearer, Status> {
        let invalid = || Status::invalid_argument("a token is printable ASCII without spaces");
        let header = token
            .map(|t| {
                let t = t.trim();
                if !t.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid());
                }
                format!("Bearer {t}").parse().map_err(|_| invalid())
            })
            .transpose()?;
        Ok(Bearer { header })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, header.clone());
        }
        Ok(request)
    }
}

/// The token a request presents: `None` without an `authorization: Bearer ...` header.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_travels_in_the_header() {
        let mut bearer_of = Bearer::new(Some("fabric_x\n")).unwrap();
        let request = bearer_of.call(Request::new(())).unwrap();
        assert_eq!(bearer(request.metadata()), Some("fabric_x"));
        let mut none = Bearer::new(None).unwrap();
        assert_eq!(
            bearer(none.call(Request::new(())).unwrap().metadata()),
            None
        );
        assert!(Bearer::new(Some("é")).is_err());
    }
}
