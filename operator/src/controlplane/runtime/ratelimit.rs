//! Client-side request rate limit (`--kube-client-qps`/`--kube-client-burst`), a token bucket in
//! front of the kube client's HTTP service (kube-rs has none built in).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tower::{Layer, Service};

/// A token bucket: `qps` tokens per second, at most `burst` saved.
pub struct Bucket {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut st = self.state.lock().await;
                let now = Instant::now();
                let refill = now.duration_since(st.1).as_secs_f64() * self.qps;
                st.0 = (st.0 + refill).min(self.burst);
                st.1 = now;
                if st.0 >= 1.0 {
                    st.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - st.0) / self.qps)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[derive(Clone)]
pub struct RateLimitLayer(Arc<Bucket>);

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;
    fn layer(&self, inner: S) -> RateLimited<S> {
        RateLimited {
            inner,
            bucket: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<Bucket>,
}

impl<S> Service<axum::http::Request<Body>> for RateLimited<S>
where
    S: Service<axum::http::Request<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<Body>) -> Self::Future {
        // The request is sent when the inner future is first polled, after the token.
        let fut = self.inner.call(req);
        let bucket = self.bucket.clone();
        Box::pin(async move {
            bucket.acquire().await;
            fut.await
        })
    }
}

/// A kube client limited to `qps` requests per second with bursts of `burst` (qps <= 0: none).
pub fn client(config: Config, qps: f64, burst: u32) -> Result<Client, kube::Error> {
    let default_ns = config.default_namespace.clone();
    let builder = ClientBuilder::try_from(config)?;
    if qps <= 0.0 || !qps.is_finite() {
        return Ok(builder.build());
    }
    let _ = default_ns;
    Ok(builder
        .with_layer(&RateLimitLayer(Arc::new(Bucket::new(qps, burst))))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_qps() {
        let b = Bucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(1));
        for _ in 0..10 {
            b.acquire().await;
        }
        // 10 more tokens at 10/s take about a second of (virtual) time.
        let e = start.elapsed();
        assert!(
            e >= Duration::from_millis(950) && e <= Duration::from_millis(1100),
            "{e:?}"
        );
    }
}
