//! `[server]`: listeners, TLS files, timeouts, size limits, trusted proxies, the admin token.

use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;

use super::Cx;
use crate::config::{file, Server, TlsFiles, MIN_HEADER_BYTES};

impl Cx<'_> {
    pub(super) fn server(&mut self, f: &file::ServerFile) -> Server {
        let listen = self.socket_addr("server.listen", &f.listen);
        let admin_listen = self.admin_listen(f, listen);
        let tls = self.tls(f);
        let request_timeout = self.positive("server.request_timeout", &f.request_timeout);
        let idle_timeout = self.positive("server.idle_timeout", &f.idle_timeout);
        let send_timeout = self.positive("server.send_timeout", &f.send_timeout);
        let shutdown_grace = self.duration("server.shutdown_grace", &f.shutdown_grace);
        let header_timeout = self.positive("server.header_timeout", &f.header_timeout);
        let max_header_bytes = self.max_header_bytes(f.max_header_bytes);
        let trusted_proxies = self.trusted_proxies(&f.trusted_proxies);
        let max_connections = self.count("server.max_connections", f.max_connections) as usize;
        let admin_token = if f.admin_token_env.is_empty() {
            None
        } else {
            (self.env)(&f.admin_token_env).filter(|t| !t.is_empty())
        };
        Server {
            listen,
            admin_listen,
            tls,
            request_timeout,
            idle_timeout,
            send_timeout,
            shutdown_grace,
            max_body_bytes: f.max_body_bytes,
            max_header_bytes,
            header_timeout,
            path_rules: crate::routing::path::PathRules {
                allow_encoded_percent: f.allow_encoded_percent,
            },
            trusted_proxies,
            admin_token,
            max_connections,
        }
    }

    /// `admin_listen`: `""` (or left out) for none; never the address of `listen`.
    fn admin_listen(&mut self, f: &file::ServerFile, listen: SocketAddr) -> Option<SocketAddr> {
        match f.admin_listen.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let addr = self.socket_addr("server.admin_listen", text);
                if addr == listen && addr.port() != 0 {
                    self.problem(
                        "server.admin_listen",
                        "is the same address as server.listen",
                    );
                }
                Some(addr)
            }
        }
    }

    /// `tls_cert_file` and `tls_key_file`: both or neither.
    fn tls(&mut self, f: &file::ServerFile) -> Option<TlsFiles> {
        match (&f.tls_cert_file, &f.tls_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem("server.tls_key_file", "required when tls_cert_file is set");
                None
            }
            (None, Some(_)) => {
                self.problem("server.tls_cert_file", "required when tls_key_file is set");
                None
            }
            (Some(cert), Some(key)) => Some(self.tls_files(cert, key)),
        }
    }

    /// The certificate file must hold a PEM certificate, the key file a PEM private key.
    fn tls_files(&mut self, cert: &Path, key: &Path) -> TlsFiles {
        if let Some(pem) = self.read("server.tls_cert_file", cert) {
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default();
            if certs.is_empty() {
                self.problem(
                    "server.tls_cert_file",
                    format!("{} holds no PEM certificate", cert.display()),
                );
            }
        }
        if let Some(pem) = self.read("server.tls_key_file", key) {
            if !matches!(
                rustls_pemfile::private_key(&mut pem.as_slice()),
                Ok(Some(_))
            ) {
                self.problem(
                    "server.tls_key_file",
                    format!("{} holds no PEM private key", key.display()),
                );
            }
        }
        TlsFiles {
            cert: self.resolve(cert),
            key: self.resolve(key),
        }
    }

    fn max_header_bytes(&mut self, bytes: u64) -> usize {
        match usize::try_from(bytes) {
            Ok(n) if bytes >= MIN_HEADER_BYTES => n,
            _ => {
                self.problem(
                    "server.max_header_bytes",
                    format!("must be at least {MIN_HEADER_BYTES}"),
                );
                MIN_HEADER_BYTES as usize
            }
        }
    }

    /// Addresses and CIDRs, each truncated to its network.
    fn trusted_proxies(&mut self, list: &[String]) -> Vec<IpNet> {
        let mut trusted_proxies = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net.trunc()),
                Err(_) => self.problem(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{text:?} is not an IP address or CIDR such as \"10.0.0.0/8\""),
                ),
            }
        }
        trusted_proxies
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::*;

    #[test]
    fn each_rule_reports_its_key_path() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            // [server]
            ("[server]\nlisten = \"localhost\"", "server.listen", "IP:port"),
            ("[server]\nadmin_listen = \"9091\"", "server.admin_listen", "IP:port"),
            (
                "[server]\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:1\"",
                "server.admin_listen",
                "same address",
            ),
            ("[server]\ntls_cert_file = \"tls-cert.pem\"", "server.tls_key_file", "required"),
            ("[server]\ntls_key_file = \"tls-key.pem\"", "server.tls_cert_file", "required"),
            (
                "[server]\ntls_cert_file = \"tls-cert.pem\"\ntls_key_file = \"missing.pem\"",
                "server.tls_key_file",
                "/missing.pem: ",
            ),
            (
                "[server]\ntls_cert_file = \"secret.txt\"\ntls_key_file = \"tls-key.pem\"",
                "server.tls_cert_file",
                "no PEM certificate",
            ),
            (
                "[server]\ntls_cert_file = \"tls-cert.pem\"\ntls_key_file = \"tls-cert.pem\"",
                "server.tls_key_file",
                "no PEM private key",
            ),
            ("[server]\nrequest_timeout = \"30\"", "server.request_timeout", "not a duration"),
            ("[server]\nidle_timeout = \"0s\"", "server.idle_timeout", "more than 0s"),
            ("[server]\nsend_timeout = \"0s\"", "server.send_timeout", "more than 0s"),
            ("[server]\nsend_timeout = \"soon\"", "server.send_timeout", "not a duration"),
            ("[server]\nshutdown_grace = \"-1s\"", "server.shutdown_grace", "not a duration"),
            ("[server]\nheader_timeout = \"\"", "server.header_timeout", "not a duration"),
            ("[server]\nmax_header_bytes = 100", "server.max_header_bytes", "at least 1024"),
            ("[server]\nmax_connections = 0", "server.max_connections", "from 1"),
            ("[server]\nmax_connections = -5", "server.max_connections", "from 1"),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.300\"]",
                "server.trusted_proxies[1]",
                "not an IP address or CIDR",
            ),
        ];
        assert_rules(cases);
    }

    #[test]
    fn empty_admin_token_turns_the_admin_api_off() {
        for var in ["EMPTY", "NOT_SET", ""] {
            let text = format!("{MINIMAL}\n[server]\nadmin_token_env = \"{var}\"\n");
            assert_eq!(ok(&text).config.server.admin_token, None, "{var:?}");
        }
    }
}
