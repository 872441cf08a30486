//! What every handler can reach: the engine and the shutdown signal.

use std::sync::Arc;

use ganger_engine::Engine;
use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    stopping: watch::Receiver<bool>,
    /// Holds the sender when nobody else does (see [`crate::router`]).
    _stop: Option<Arc<watch::Sender<bool>>>,
}

impl AppState {
    pub(crate) fn new(
        engine: Engine,
        stopping: watch::Receiver<bool>,
        stop: Option<watch::Sender<bool>>,
    ) -> Self {
        AppState {
            engine,
            stopping,
            _stop: stop.map(Arc::new),
        }
    }

    /// Completes when the server begins to shut down; never, if it is not
    /// told to.
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.stopping.clone();
        async move {
            if stopping.wait_for(|stop| *stop).await.is_err() {
                // The sender is gone without a stop: nothing will ever stop us.
                std::future::pending::<()>().await;
            }
        }
    }
}
