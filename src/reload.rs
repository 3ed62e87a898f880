//! Live reload: SIGHUP, `POST /admin/reload` and a watch on the *folders* of the config file
//! and, with `login.backend = "users_file"`, of the users file (editors replace files by
//! renaming, which a watch on the file itself would miss) each build a new, fully validated
//! snapshot and swap it in. A bad file changes nothing: the old config keeps serving and the
//! problems are logged (or returned to the admin caller).
//!
//! Every path goes through [`reload`], which also ends the sessions of users the new snapshot
//! dropped from the users file ([`removed_users`]): a removed user must not keep a working
//! token. A store error there never undoes the reload: it is logged and retried in the
//! background until it succeeds or the user is back.
//!
//! A reload is one log line saying what changed (`changes.rs`: routes and upstreams added,
//! removed or changed, keys rotated, users added or removed) and naming the keys fixed at
//! start whose new values wait for a restart (listen addresses, TLS files, connection limits
//! and timeouts, the session store); a refused one is one line with every problem.
//!
//! Everything here that runs in the background stops on the app's shutdown signal: the
//! SIGHUP forwarder, the loop that reloads on a change (a change still waiting out its
//! debounce is dropped; a reload under way is work that shutdown waits for, within
//! `shutdown_grace`) and the retries of [`follow_up`]. The folder watch ([`FolderWatch`])
//! belongs to the loop and ends with it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

mod changes;

use changes::Changes;

use crate::app::App;
use crate::audit::{self, Event, Subject};
use crate::config::{self, Config, ConfigError, LoginBackend};
use crate::session::{EndReason, StoreError};
use crate::shutdown::Signal;

/// First wait before ending a removed user's sessions again after a store error; it doubles
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// A login that loaded the old snapshot just before the swap may still create a session for a
/// removed user after the first pass (it waits for an Argon2 slot up to
/// [`crate::login::lockout::VERIFY_QUEUE_WAIT`], then writes to the store): one more pass this
/// long after the reload ends those too.
const LATE_SWEEP: Duration = Duration::from_secs(10);

/// Rounds of list-then-end per user in one pass (a round finds sessions created meanwhile).
const ROUNDS: usize = 3;

/// How long a change waits before it is read: editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Loads the file again and swaps it in if it validates; then ends the sessions of the users
/// it removed from the users file (inline, so `POST /admin/reload` answers once they are
/// ended, unless the store fails: then in the background).
pub async fn reload(app: &Arc<App>, path: &Path) -> Result<(), ConfigError> {
    match config::load(path) {
        Ok(loaded) => {
            let old = app.live();
            let (a, b) = (&old.config, &loaded.config);
            let changes = Changes::between(a, b);
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            let removed = removed_users(a, b);
            drop(old);
            app.swap(loaded.config);
            metrics::counter!("authgate_config_reloads_total", "result" => "ok").increment(1);
            if changes.restart.is_empty() {
                tracing::info!(path = %path.display(), %changes, "config reloaded");
            } else {
                let restart_needed = changes.restart.join(", ");
                tracing::warn!(
                    path = %path.display(),
                    %changes,
                    %restart_needed,
                    "config reloaded; the keys in restart_needed keep their old values until a restart"
                );
            }
            end_removed_users(app, removed).await;
            Ok(())
        }
        Err(e) => {
            metrics::counter!("authgate_config_reloads_total", "result" => "error").increment(1);
            let problems: Vec<String> = e.0.iter().map(ToString::to_string).collect();
            tracing::error!(
                path = %path.display(),
                problems = %problems.join("; "),
                "config reload refused; the old config keeps serving"
            );
            Err(e)
        }
    }
}

/// The users-file user ids of `c` (none for the other backends).
fn file_user_ids(c: &Config) -> HashSet<&str> {
    match &c.login.backend {
        LoginBackend::UsersFile { users, .. } => users.values().map(|u| u.id.as_str()).collect(),
        _ => HashSet::new(),
    }
}

/// Ids of the users file in `old` that are not in `new`, sorted. Compared by id, not by
/// username (the map's key): a renamed user keeps its sessions, a new user under an old
/// username does not inherit them. A new snapshot without the users file backend has no
/// users of it, so every old one counts as removed.
pub(crate) fn removed_users(old: &Config, new: &Config) -> Vec<String> {
    let kept = file_user_ids(new);
    let mut removed: Vec<String> = file_user_ids(old)
        .into_iter()
        .filter(|id| !kept.contains(id))
        .map(str::to_owned)
        .collect();
    removed.sort_unstable();
    removed
}

/// Is `user_id` still absent from the live snapshot's users? (A later reload may have put it
/// back; then its sessions are left alone.)
fn still_removed(app: &App, user_id: &str) -> bool {
    app.live().login.has_user_id(user_id) != Some(true)
}

/// Ends every session of the `removed` users (reason `revoked`, one `session_revoked` audit
/// line each). Stops at the first store error, logs it, and leaves that user and the rest to a
/// background task (so an admin caller waits for at most one store timeout), which also makes
/// the late pass of [`LATE_SWEEP`].
async fn end_removed_users(app: &Arc<App>, removed: Vec<String>) {
    if removed.is_empty() {
        return;
    }
    let left = end_sessions_of(app, &removed).await;
    let stop = app.shutdown.signal();
    let app = Arc::downgrade(app);
    tokio::spawn(follow_up(app, stop, left, removed));
}

/// Retries `left` until done, then (after [`LATE_SWEEP`]) makes one more pass over `all`.
/// Stops when the app is gone or on the shutdown signal.
async fn follow_up(app: Weak<App>, mut stop: Signal, left: Vec<String>, all: Vec<String>) {
    if !retry(&app, &mut stop, left).await {
        return;
    }
    if !pause(&mut stop, LATE_SWEEP).await {
        tracing::debug!("shutting down: the late pass over removed users is skipped");
        return;
    }
    let Some(strong) = app.upgrade() else {
        return;
    };
    let all: Vec<String> = all
        .into_iter()
        .filter(|u| still_removed(&strong, u))
        .collect();
    let left = end_sessions_of(&strong, &all).await;
    drop(strong);
    retry(&app, &mut stop, left).await;
}

/// Tries `left` again with a growing wait until every one is done (or back in the users
/// file); false if the app went away or the shutdown signal came first.
async fn retry(app: &Weak<App>, stop: &mut Signal, mut left: Vec<String>) -> bool {
    let mut wait = RETRY_FIRST;
    while !left.is_empty() {
        if !pause(stop, wait).await {
            tracing::warn!(
                users = left.len(),
                "shutting down before the sessions of users removed from the users file \
                 could all be ended; they are not retried"
            );
            return false;
        }
        wait = (wait * 2).min(RETRY_MAX);
        let Some(app) = app.upgrade() else {
            return false;
        };
        left.retain(|u| still_removed(&app, u));
        left = end_sessions_of(&app, &left).await;
    }
    true
}

/// Waits `d`; false if the shutdown signal came first.
async fn pause(stop: &mut Signal, d: Duration) -> bool {
    tokio::select! {
        _ = stop.signalled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// One pass over `users`; the ones not done because the store failed (that one and the rest).
async fn end_sessions_of(app: &App, users: &[String]) -> Vec<String> {
    for (i, user_id) in users.iter().enumerate() {
        match end_user(app, user_id).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(%user_id, ended = n, "sessions of a removed user ended"),
            Err(e) => {
                crate::error::store_failed(&e, "sessions of a removed user not ended yet");
                tracing::error!(
                    %user_id,
                    error = %e,
                    waiting = users.len() - i,
                    "could not end the sessions of a user removed from the users file; \
                     the new config is in force and this is retried"
                );
                return users[i..].to_vec();
            }
        }
    }
    Vec::new()
}

/// Ends the active sessions of one user, one by one so each gets its audit line; how many.
async fn end_user(app: &App, user_id: &str) -> Result<u32, StoreError> {
    let mut ended = 0;
    for _ in 0..ROUNDS {
        let t = app.clock.now_ms();
        let sessions = app.store.list(user_id, t).await?;
        if sessions.is_empty() {
            break;
        }
        for s in sessions {
            if let Some(e) = app
                .store
                .end_session(user_id, &s.id, EndReason::Revoked, t)
                .await?
            {
                ended += 1;
                app.notify
                    .session_ended(crate::app::about(&e), crate::notify::Reason::UserRemoved);
                audit::record(
                    Event::SessionRevoked,
                    Subject {
                        user_id: Some(user_id),
                        session_id: Some(&s.id),
                        platform: Some(&s.platform),
                        ip: None,
                    },
                );
            }
        }
    }
    Ok(ended)
}

/// Reloads on SIGHUP and on changes to the config file and the users file, until the
/// shutdown signal. Which users file is watched follows the live config.
pub fn spawn(app: Arc<App>, path: PathBuf) {
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    forward_sighup(&app, tx.clone());
    let mut watch = FolderWatch::new(tx);
    if let Some(w) = watch.as_mut() {
        w.follow(&watched_files(&path, &app.live().config));
    }
    tokio::spawn(reload_on_change(app, path, rx, watch));
}

/// Forwards each SIGHUP to `tx` until the shutdown signal.
#[cfg(unix)]
fn forward_sighup(app: &App, tx: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered here, before `spawn` returns, not inside the task: a SIGHUP that came
    // between the two would take the default action and end the process.
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the file watch and /admin/reload still reload");
            return;
        }
    };
    let mut stop = app.shutdown.signal();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.signalled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            let _ = tx.try_send(());
        }
    });
}

#[cfg(not(unix))]
fn forward_sighup(_: &App, _: tokio::sync::mpsc::Sender<()>) {}

/// Reloads once per burst of changes signalled on `rx`, until the shutdown signal.
async fn reload_on_change(
    app: Arc<App>,
    path: PathBuf,
    mut rx: tokio::sync::mpsc::Receiver<()>,
    mut watch: Option<FolderWatch>,
) {
    let mut stop = app.shutdown.signal();
    loop {
        tokio::select! {
            _ = stop.signalled() => break,
            got = rx.recv() => if got.is_none() { break },
        }
        tracing::debug!("reload pending: waiting out the debounce");
        // Let the editor finish, then read once; a shutdown meanwhile drops the change.
        if !pause(&mut stop, DEBOUNCE).await {
            tracing::info!("shutting down: a pending config reload is dropped");
            break;
        }
        while rx.try_recv().is_ok() {}
        // Under way, a reload is finished (within `shutdown_grace`) rather than cut.
        let work = app.shutdown.work();
        let _ = reload(&app, &path).await;
        drop(work);
        if let Some(w) = watch.as_mut() {
            w.follow(&watched_files(&path, &app.live().config));
        }
    }
}

/// The files whose changes reload: the config file and the users file it names.
fn watched_files(config_path: &Path, c: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    if let LoginBackend::UsersFile { path, .. } = &c.login.backend {
        files.push(path.clone());
    }
    files
}

/// A watch on the folders of some files, signalling on `tx` when one of those files changes.
struct FolderWatch {
    watcher: notify::RecommendedWatcher,
    /// Absolute paths of the watched files; read by the watcher's callback thread.
    files: Arc<Mutex<Vec<PathBuf>>>,
    /// The folders watched now.
    folders: Vec<PathBuf>,
}

impl FolderWatch {
    fn new(tx: tokio::sync::mpsc::Sender<()>) -> Option<Self> {
        let files: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
        let seen = files.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            let files = seen.lock().unwrap_or_else(PoisonError::into_inner);
            // The backend names the watched folder joined with the file name, so an
            // absolute path of ours compares equal.
            if ev.paths.iter().any(|p| files.contains(p)) {
                let _ = tx.try_send(());
            }
        })
        .map_err(
            |e| tracing::warn!(error = %e, "cannot watch the config folder; SIGHUP still reloads"),
        )
        .ok()?;
        Some(Self {
            watcher,
            files,
            folders: Vec::new(),
        })
    }

    /// Watches the folders of `files` and no others.
    fn follow(&mut self, files: &[PathBuf]) {
        use notify::{RecursiveMode, Watcher};
        let abs: Vec<PathBuf> = files
            .iter()
            .filter_map(|f| std::path::absolute(f).ok())
            .collect();
        let mut wanted: Vec<PathBuf> = abs
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        wanted.sort();
        wanted.dedup();
        for old in &self.folders {
            if !wanted.contains(old) {
                // Gone already (folder removed) is fine.
                let _ = self.watcher.unwatch(old);
            }
        }
        let mut now_watched = Vec::with_capacity(wanted.len());
        for folder in wanted {
            if self.folders.contains(&folder) {
                now_watched.push(folder);
                continue;
            }
            match self.watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => now_watched.push(folder),
                Err(e) => tracing::warn!(
                    folder = %folder.display(),
                    error = %e,
                    "cannot watch a config folder; SIGHUP and POST /admin/reload still reload"
                ),
            }
        }
        self.folders = now_watched;
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = abs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid PHC string (the fixture users file's); never verified here.
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$eECQyicfEQ3RQnGR8ra3jA$pNsvNIX9cOhPMO4igTkd4fWKNKSwMfyAL/RZ4M+apxA";

    /// A config with `backend` and a users file holding `users` as `(id, username)`.
    fn config(backend: &str, users: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut file = String::new();
        for (id, name) in users {
            file +=
                &format!("[[users]]\nid = {id:?}\nusername = {name:?}\npassword_hash = {HASH:?}\n");
        }
        std::fs::write(dir.path().join("users.toml"), file).unwrap();
        let text = format!(
            "[session]\nmode = \"stateless\"\n[login]\nbackend = {backend:?}\n[[upstreams]]\nname = \"app\"\n\
             urls = [\"http://127.0.0.1:9000\"]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n"
        );
        let env = |name: &str| {
            (name == "AUTHGATE_JWT_SECRET")
                .then(|| "test-secret-0123456789abcdef0123456789abcdef".to_owned())
        };
        match config::load_str(&text, dir.path(), &env) {
            Ok(l) => l.config,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn removed_users_are_compared_by_id() {
        let old = config(
            "users_file",
            &[("1001", "alice"), ("2002", "bob"), ("3003", "eve")],
        );
        // alice renamed (same id) stays; bob gone; eve's username now belongs to a new id.
        let new = config("users_file", &[("1001", "alicia"), ("4004", "eve")]);
        assert_eq!(removed_users(&old, &new), ["2002", "3003"]);
        assert!(removed_users(&old, &old).is_empty());
        assert!(removed_users(&new, &old).contains(&"4004".to_owned()));
    }

    #[test]
    fn leaving_the_users_file_backend_removes_all_of_its_users() {
        let file = config("users_file", &[("1001", "alice"), ("2002", "bob")]);
        let none = config("none", &[("1001", "alice")]);
        assert_eq!(removed_users(&file, &none), ["1001", "2002"]);
        assert!(
            removed_users(&none, &file).is_empty(),
            "nobody was in a users file before"
        );
    }

    #[test]
    fn the_users_file_is_watched_beside_the_config() {
        let c = config("users_file", &[("1001", "alice")]);
        let LoginBackend::UsersFile { path, .. } = &c.login.backend else {
            panic!("users_file backend");
        };
        let files = watched_files(Path::new("/etc/authgate/gateway.toml"), &c);
        assert_eq!(
            files,
            [PathBuf::from("/etc/authgate/gateway.toml"), path.clone()]
        );
        let none = config("none", &[]);
        assert_eq!(
            watched_files(Path::new("g.toml"), &none),
            [PathBuf::from("g.toml")]
        );
    }
}
