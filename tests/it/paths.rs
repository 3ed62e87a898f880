//! Path tricks against a `/public` route in front of a protected `/`: each is either a 400 or
//! treated as the protected route it resolves to, never forwarded as public; and the upstream
//! receives the canonical path that was matched.

use crate::support::*;

enum Expect {
    /// 400 bad_request, with or without a token.
    BadRequest,
    /// Handled as the protected route at this canonical path.
    Protected(&'static str),
}

async fn attempt(raw_path: &str, expect: Expect) {
    let gw = Gateway::start(Conf::new()).await;
    let token = gw.mint(&alice());
    let auth = format!("Authorization: Bearer {token}\r\n");
    match expect {
        Expect::BadRequest => {
            for extra in ["", auth.as_str()] {
                let r = gw.raw_get(raw_path, extra).await;
                assert_eq!(r.status, 400, "{raw_path}");
                assert_eq!(r.code(), "bad_request", "{raw_path}");
            }
            assert_eq!(gw.upstream.hits(), 0, "{raw_path} reached the upstream");
        }
        Expect::Protected(canonical) => {
            gw.raw_get(raw_path, "")
                .await
                .assert_error(401, "missing_token");
            assert_eq!(
                gw.upstream.hits(),
                0,
                "{raw_path} reached the upstream without a token"
            );
            // With a token it is the protected route: identity injected, canonical path sent.
            let r = gw.raw_get(raw_path, &auth).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.seen_path(), canonical);
            assert_eq!(r.seen("x-user-id"), ["1001"]);
        }
    }
}

#[tokio::test]
async fn dot_dot_out_of_public() {
    attempt("/public/../private", Expect::Protected("/private")).await;
}

#[tokio::test]
async fn encoded_dot_dot_out_of_public() {
    attempt("/public/%2e%2e/private", Expect::Protected("/private")).await;
    attempt("/public/%2E%2E/private", Expect::Protected("/private")).await;
    attempt("/public/.%2e/private", Expect::Protected("/private")).await;
}

#[tokio::test]
async fn dot_dot_semicolon_is_400() {
    attempt("/public/..;/private", Expect::BadRequest).await;
    attempt("/public/..;jsessionid=x/private", Expect::BadRequest).await;
}

#[tokio::test]
async fn encoded_slash_is_400() {
    attempt("/public%2fprivate", Expect::BadRequest).await;
    attempt("/public%2Fprivate", Expect::BadRequest).await;
    attempt("/public/..%2fprivate", Expect::BadRequest).await;
}

#[tokio::test]
async fn double_slash_then_dot_dot() {
    attempt("//public/../private", Expect::Protected("/private")).await;
}

#[tokio::test]
async fn encoded_backslash_is_400() {
    attempt("/public/%5c..%5cprivate", Expect::BadRequest).await;
    attempt("/public/%5C..%5Cprivate", Expect::BadRequest).await;
    attempt("/public/\\..\\private", Expect::BadRequest).await;
}

#[tokio::test]
async fn query_string_never_selects_the_route() {
    let gw = Gateway::start(Conf::new()).await;
    gw.raw_get("/admin?x=/public", "")
        .await
        .assert_error(401, "missing_token");
    let bob = gw.mint(&bob());
    gw.raw_get(
        "/admin?x=/public",
        &format!("Authorization: Bearer {bob}\r\n"),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(gw.upstream.hits(), 0);
    let alice = gw.mint(&alice());
    let r = gw
        .raw_get(
            "/admin?x=/public",
            &format!("Authorization: Bearer {alice}\r\n"),
        )
        .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/admin");
    assert_eq!(echo["query"], "x=/public");
}

#[tokio::test]
async fn prefix_only_matches_on_segment_boundary() {
    attempt("/publicx", Expect::Protected("/publicx")).await;
    attempt("/public.json", Expect::Protected("/public.json")).await;
}

#[tokio::test]
async fn path_parameters_do_not_dodge_a_protected_route() {
    // Servlet containers route `/admin;jsessionid=x` as `/admin`; so does the gateway.
    let gw = Gateway::start(Conf::new()).await;
    let bob = gw.mint(&bob());
    for path in ["/admin;jsessionid=x/panel", "/admin;/panel", "/admin;x"] {
        gw.raw_get(path, &format!("Authorization: Bearer {bob}\r\n"))
            .await
            .assert_error(403, "forbidden");
    }
    assert_eq!(gw.upstream.hits(), 0);
    // And a public route with parameters stays public, forwarded as canonicalised.
    let r = gw.raw_get("/public;v=1/x", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/public;v=1/x");
}

#[tokio::test]
async fn climbing_above_the_root_is_400() {
    attempt("/public/../../etc/passwd", Expect::BadRequest).await;
    attempt("/..", Expect::BadRequest).await;
}

#[tokio::test]
async fn control_bytes_and_bad_escapes_are_400() {
    attempt("/public/%00", Expect::BadRequest).await;
    attempt("/public/a%zz", Expect::BadRequest).await;
    attempt("/public/%1b", Expect::BadRequest).await;
}

#[tokio::test]
async fn absolute_form_target_is_canonicalised_too() {
    attempt(
        "http://gw.test/public/../private",
        Expect::Protected("/private"),
    )
    .await;
}

#[tokio::test]
async fn upstream_receives_the_canonical_path() {
    let gw = Gateway::start(Conf::new()).await;
    for (sent, canonical) in [
        ("/public/a/./b/../c//d", "/public/a/c/d"),
        ("/public/%7Euser", "/public/~user"),
        ("/public/caf%c3%a9", "/public/caf%C3%A9"),
        ("/public/x/", "/public/x/"),
        ("/public/a/..", "/public/"),
        ("/public//", "/public/"),
    ] {
        let r = gw.raw_get(sent, "").await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.seen_path(), canonical, "{sent}");
    }
    // A dot segment out of and back into the public route stays public.
    let r = gw.raw_get("/private/../public/x", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/public/x");
}

#[tokio::test]
async fn double_encoding_is_400() {
    // An upstream that decodes twice would read these as `/public/../private`.
    attempt("/public/%252e%252e/private", Expect::BadRequest).await;
    attempt("/public/%252E%252E/private", Expect::BadRequest).await;
    attempt("/public/%25%32%65%25%32%65/private", Expect::BadRequest).await;
    attempt("/public%252fprivate", Expect::BadRequest).await;
    attempt("/public/100%25", Expect::BadRequest).await;
}

#[tokio::test]
async fn overlong_and_invalid_utf8_escapes_are_400() {
    // Old decoders read the overlong %c0%ae as `.`.
    attempt("/public/%c0%ae%c0%ae/private", Expect::BadRequest).await;
    attempt("/public/%C0%AE%C0%AE/private", Expect::BadRequest).await;
    attempt("/public/%e0%80%ae%e0%80%ae/private", Expect::BadRequest).await;
    attempt("/public/%c0%af", Expect::BadRequest).await;
    attempt("/public/%ff", Expect::BadRequest).await;
    attempt("/public/caf%c3", Expect::BadRequest).await;
}

#[tokio::test]
async fn encoded_percent_passes_when_allowed() {
    let gw = Gateway::start(Conf::new().server("allow_encoded_percent = true")).await;
    let r = gw.raw_get("/public/100%25/off", "").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.seen_path(), "/public/100%25/off");
    // Still the same path to the gateway and the upstream: no decoding of %25 itself.
    let r = gw.raw_get("/public/%252e%252e/private", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/public/%252e%252e/private");
    // UTF-8 is checked all the same.
    gw.raw_get("/public/%c0%ae%c0%ae/private", "")
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn a_segment_ending_in_a_dot_or_space_is_400() {
    // IIS and other Windows servers strip them: /admin./x would be /admin/x there.
    for path in [
        "/admin./x",
        "/admin%20/x",
        "/admin%2e/x",
        "/admin.%20/x",
        "/admin.;x/y",
        "/public/x.",
        "/public/.../x",
    ] {
        attempt(path, Expect::BadRequest).await;
    }
}

#[tokio::test]
async fn route_rules_ignore_ascii_case() {
    let gw = Gateway::start(Conf::new()).await;
    let bob = format!("Authorization: Bearer {}\r\n", gw.mint(&bob()));
    let alice = format!("Authorization: Bearer {}\r\n", gw.mint(&alice()));
    for path in ["/ADMIN/x", "/Admin/x", "/aDmIn;v=1/x", "/ACME/x"] {
        gw.raw_get(path, "")
            .await
            .assert_error(401, "missing_token");
        gw.raw_get(path, &bob).await.assert_error(403, "forbidden");
    }
    assert_eq!(
        gw.upstream.hits(),
        0,
        "a case variant slipped past the route"
    );
    // The admin gets through, and the path goes upstream as sent.
    let r = gw.raw_get("/ADMIN/x", &alice).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/ADMIN/x");
    // A public route in another case is public, and strip_prefix folds too.
    let r = gw.raw_get("/PUBLIC/x", "").await;
    assert_eq!(r.status, 200);
    let r = gw.raw_get("/Stripped/Rest", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/Rest");
}

#[tokio::test]
async fn route_case_sensitive_keeps_exact_comparison() {
    let gw = Gateway::start(Conf::new().server("route_case_sensitive = true")).await;
    let bob = format!("Authorization: Bearer {}\r\n", gw.mint(&bob()));
    gw.raw_get("/admin/x", &bob)
        .await
        .assert_error(403, "forbidden");
    // /ADMIN is another path: the catch-all (required, no roles) takes it.
    let r = gw.raw_get("/ADMIN/x", &bob).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/ADMIN/x");
    // /PUBLIC is not the public route.
    gw.raw_get("/PUBLIC/x", "")
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn an_escaped_sub_delimiter_does_not_dodge_its_route() {
    // A protected route whose pattern holds `+ : @`, in front of a public catch-all: each
    // escaped spelling is that route (an upstream reads `%2B` as `+`), not the catch-all.
    let gw = Gateway::start(Conf::new().routes(
        "[[routes]]\nexact = \"/api/a+b\"\nupstream = \"up\"\nauth = \"required\"\n\
         [[routes]]\npath = \"/v1:x@y\"\nupstream = \"up\"\nauth = \"required\"\n\
         [[routes]]\npath = \"/\"\nupstream = \"up\"\nauth = \"public\"\n",
    ))
    .await;
    let auth = format!("Authorization: Bearer {}\r\n", gw.mint(&alice()));
    for (i, (raw, canonical)) in [
        ("/api/a%2Bb", "/api/a+b"),
        ("/api/a%2bb", "/api/a+b"),
        ("/api/a+b", "/api/a+b"),
        ("/v1%3Ax%40y/z", "/v1:x@y/z"),
        ("/v1:x%40y", "/v1:x@y"),
    ]
    .into_iter()
    .enumerate()
    {
        gw.raw_get(raw, "").await.assert_error(401, "missing_token");
        assert_eq!(
            gw.upstream.hits(),
            i,
            "{raw} reached the upstream as public"
        );
        let r = gw.raw_get(raw, &auth).await;
        assert_eq!(r.status, 200, "{raw}");
        assert_eq!(r.seen_path(), canonical, "{raw}");
        assert_eq!(r.seen("x-user-id"), ["1001"], "{raw}");
    }
    // `%3B` is no `;`: it stays encoded, and the path is not the route's.
    let r = gw.raw_get("/api/a%3Bb", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_path(), "/api/a%3Bb");
}
