//! Live reload: SIGHUP, `POST /admin/reload` and a watch on the config file's folder each build
//! a new validated snapshot and swap it in; a bad file changes nothing.
