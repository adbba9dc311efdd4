//! The background workers every instance runs beside the HTTP server. Each stops when
//! the token is cancelled; all are safe to run on any number of instances at once.

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::AppContext;

pub fn spawn_all(app: &AppContext, stop: &CancellationToken, tasks: &mut JoinSet<()>) {
    tasks.spawn(crate::expiry::listen(app.clone(), stop.clone()));
    tasks.spawn(crate::expiry::sweep(app.clone(), stop.clone()));
    tasks.spawn(crate::live::run(app.clone(), stop.clone()));
    tasks.spawn(crate::recovery::watch(app.clone(), stop.clone()));
    tasks.spawn(crate::metrics::sample_live(app.live.clone(), stop.clone()));
    tasks.spawn(crate::metrics::sample_outbox(
        app.engine.clone(),
        stop.clone(),
    ));
    if app.config.flush_enabled {
        tasks.spawn(crate::outbox::run(app.clone(), stop.clone()));
    }
}
