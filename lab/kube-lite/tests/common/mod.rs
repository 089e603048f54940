//! Helpers shared by the kube-lite integration tests.

/// The Status of an API error; any other error fails the test.
pub fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
