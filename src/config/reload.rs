//! Live reload: SIGHUP, `POST /admin/reload` and a watch on the config file's *folder* (editors
//! replace files by renaming, which a watch on the file itself would miss) each build a new,
//! fully validated snapshot and swap it in. A bad file changes nothing: the old config keeps
//! serving and the problems are logged (or returned to the admin caller).
//!
//! Listen addresses, TLS files, connection limits and the session store are fixed at start;
//! a reload that changes them says so in the log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::config::{self, ConfigError};

/// Loads the file again and swaps it in if it validates.
pub fn reload(app: &App, path: &Path) -> Result<(), ConfigError> {
    match config::load(path) {
        Ok(loaded) => {
            let old = app.live();
            let (a, b) = (&old.config, &loaded.config);
            if a.server.listen != b.server.listen
                || a.server.admin_listen != b.server.admin_listen
                || a.server.tls.is_some() != b.server.tls.is_some()
                || a.session.store != b.session.store
                || a.session.redis_url != b.session.redis_url
                || a.session.redis_cluster != b.session.redis_cluster
                || a.session.key_prefix != b.session.key_prefix
            {
                tracing::warn!(
                    "listen addresses, TLS and the session store take effect only after a restart"
                );
            }
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            app.swap(loaded.config);
            metrics::counter!("authgate_config_reloads_total", "result" => "ok").increment(1);
            tracing::info!(path = %path.display(), "config reloaded");
            Ok(())
        }
        Err(e) => {
            metrics::counter!("authgate_config_reloads_total", "result" => "error").increment(1);
            for p in &e.0 {
                tracing::error!(problem = %p, "config reload refused; the old config keeps serving");
            }
            Err(e)
        }
    }
}

/// Reloads on SIGHUP and on changes in the config file's folder, for the life of the process.
pub fn spawn(app: Arc<App>, path: PathBuf) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    #[cfg(unix)]
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    let watcher = watch_folder(&path, tx);
    tokio::spawn(async move {
        let _watcher = watcher; // kept alive as long as the loop runs
        while rx.recv().await.is_some() {
            // Editors write in several steps: let them finish, then read once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            let _ = reload(&app, &path);
        }
    });
}

fn watch_folder(
    path: &Path,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let abs = std::path::absolute(path).ok()?;
    let folder = abs.parent()?.to_path_buf();
    let name = abs.file_name()?.to_os_string();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.kind.is_access() {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch the config folder; SIGHUP still reloads"))
    .ok()?;
    if let Err(e) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, "cannot watch the config folder; SIGHUP still reloads");
        return None;
    }
    Some(watcher)
}
