//! The web console in headless Chromium, as people use it: the whole flow from
//! the operator's first partner administrator to a recorder online on a customer's page,
//! at a laptop's and a phone's size, with two people in two browser profiles at once,
//! every page screenshotted and checked with axe-core.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use contera_e2e::browser::{Browser, Recording, Viewport};

/// A tiny HTTP server on loopback for the harness's own test: fixed pages under a strict
/// CSP (no inline script), a form that echoes what was posted, a cookie setter.
fn fixture_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                let page = |title: &str, main: &str| {
                    format!(
                        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                         <title>{title}</title></head><body><main><h1>{title}</h1>{main}\
                         </main></body></html>"
                    )
                };
                let (cookie, html) = match path.as_str() {
                    "/form" => (
                        None,
                        page(
                            "Form",
                            "<form method=\"post\" action=\"/done\">\
                             <label for=\"email\">Email</label><input id=\"email\" name=\"email\">\
                             <label for=\"kind\">Kind</label><select id=\"kind\" name=\"kind\">\
                             <option value=\"partner\">Partner</option>\
                             <option value=\"customer\">Customer</option></select>\
                             <input type=\"checkbox\" id=\"age\" name=\"age\">\
                             <label for=\"age\">I confirm I am at least 18 years old</label>\
                             <button type=\"submit\">Log in</button></form>",
                        ),
                    ),
                    "/done" => (
                        None,
                        page(
                            "Done",
                            &format!("<p id=\"echo\">{}</p>", body.replace('<', "&lt;")),
                        ),
                    ),
                    "/bad" => (None, page("Bad", "<img src=\"/nothing.png\">")),
                    "/set" => (Some("who=one; Path=/"), page("Set", "<p>set</p>")),
                    _ => (None, page("Home", "<p>home</p>")),
                };
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-security-policy: default-src 'self'; frame-ancestors 'none'\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    html.len()
                );
                if let Some(cookie) = cookie {
                    head.push_str(&format!("set-cookie: {cookie}\r\n"));
                }
                head.push_str("\r\n");
                let mut stream = stream;
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(html.as_bytes());
            });
        }
    });
    port
}

/// The harness itself, on fixed pages: fields by label and id, a select, a checkbox, a
/// button by its text, waits, both window sizes, two profiles with separate cookies,
/// screenshots, and axe-core injected past a CSP that forbids inline scripts.
#[test]
fn the_browser_harness_drives_pages_at_both_sizes_in_two_profiles() {
    let Some(tools) = contera_e2e::browser::tools_or_skip("the_browser_harness_drives_pages")
    else {
        return;
    };
    let base = format!("http://127.0.0.1:{}", fixture_server());
    let recording = Recording::new("harness");
    let mut one = Browser::start(&tools, &recording, "one", Viewport::Laptop);
    let two = Browser::start(&tools, &recording, "two", Viewport::Phone);
    assert_eq!(one.inner_size(), (1366, 768));
    assert_eq!(two.inner_size(), (390, 844));

    one.open(&format!("{base}/form"));
    one.fill("Email", "jo@example.com");
    one.select("#kind", "customer");
    assert_eq!(one.selected("kind"), "customer");
    one.check("I confirm I am at least 18 years old");
    let shot = one.screenshot("form");
    assert!(shot.ends_with("01-form-laptop.png"), "{}", shot.display());
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    one.assert_accessible("form");
    one.click_button("Log in");
    one.wait_for_element("#echo");
    assert_eq!(one.path(), "/done");
    assert_eq!(
        one.text("#echo"),
        "email=jo%40example.com&kind=customer&age=on"
    );

    // axe-core finds what it should, here an image without a text alternative.
    one.open(&format!("{base}/bad"));
    let violations = one.axe_check("bad");
    assert!(
        violations.iter().any(|v| v.id == "image-alt" && v.fails()),
        "{violations:?}"
    );

    // Two profiles at once share no cookies.
    one.open(&format!("{base}/set"));
    two.open(&format!("{base}/"));
    let cookie = |b: &Browser| b.execute("return document.cookie;", vec![]);
    assert_eq!(cookie(&one), "who=one");
    assert_eq!(cookie(&two), "");
    two.screenshot("home");

    one.set_viewport(Viewport::Phone);
    assert_eq!(one.inner_size(), (390, 844));
    let shot = one.screenshot("set");
    assert!(shot.ends_with("03-set-phone.png"), "{}", shot.display());

    let summary = recording.axe_summary();
    println!("{summary}");
    assert!(
        summary.starts_with("axe-core: 2 pages checked"),
        "{summary}"
    );
}
