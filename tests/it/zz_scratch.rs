use crate::support::*;

#[tokio::test]
async fn zz_scratch() {
    let gw = Gateway::start(Conf::new()).await;
    let huge = "A".repeat(100 * 1024);
    let r = gw.raw_get("/api/orders", &format!("Authorization: Bearer {huge}\r\n")).await;
    eprintln!("huge: {} {:?}", r.status, r.body);
    for p in ["/public/\\..\\private", "/public/a%zz", "/public/%00", "/public/%1b", "/.."] {
        let r = gw.raw_get(p, "").await;
        eprintln!("{p}: {} {:?}", r.status, r.body);
    }
    let r = gw.raw_get("/public/x", "X-Forwarded-User: admin\r\nX-Forwarded-Email: a@b\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Prefix: /admin\r\nX-Original-URL: /admin\r\n").await;
    eprintln!("{}", r.json()["headers"]);
}
