//! The client's tests: refusals as errors, path segments, requests against a one-shot server.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

#[test]
fn a_refusal_names_its_field_as_the_cli_always_did() {
    let body = r#"{"error":{"field":"id","reason":"no job 7"}}"#;
    let e = ClientError::refused(404, body);
    assert_eq!(e.to_string(), "refused (404): id: no job 7");
    assert!(e.is_not_found());
    let e = ClientError::refused(403, r#"{"error":{"field":"","reason":"admin only"}}"#);
    assert_eq!(e.to_string(), "refused (403): admin only");
    assert!(!e.is_not_found());
    // Not the API's error document: the body is the reason.
    let e = ClientError::refused(502, "bad gateway");
    assert_eq!(
        e,
        ClientError::Refused {
            status: 502,
            field: String::new(),
            reason: "bad gateway".into()
        }
    );
    assert_eq!(e.to_string(), "refused (502): bad gateway");
}

#[test]
fn a_topology_path_travels_as_one_segment() {
    assert_eq!(segment("nvl00000t00"), "nvl00000t00");
    assert_eq!(segment("aws/us-east-1/a b%"), "aws%2Fus-east-1%2Fa%20b%25");
}

/// A one-request server: returns what it was asked, and answers `status` with `body`.
fn serve_once(status: &str, body: &str) -> (String, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (status, body) = (status.to_string(), body.to_string());
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    (url, handle)
}

#[test]
fn requests_carry_the_token_to_the_endpoint_s_url() {
    let (url, server) = serve_once("200 OK", r#"{"jobs":[],"next_after":null}"#);
    let client = Client::new(&url, "secret");
    assert_eq!(client.base_url(), url.trim_end_matches('/'));
    let page = client
        .jobs(&JobQuery {
            tenant: Some("vision".into()),
            limit: Some(1000),
            ..JobQuery::default()
        })
        .unwrap();
    assert_eq!(page.jobs, Vec::new());
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET /v1/jobs?tenant=vision&limit=1000 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer secret\r\n"),
        "{head}"
    );
}

#[test]
fn errors_keep_their_kind() {
    let (url, server) = serve_once(
        "404 Not Found",
        r#"{"error":{"field":"id","reason":"no job 9"}}"#,
    );
    let e = Client::new(&url, "t").cancel_job(9).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(server
        .join()
        .unwrap()
        .starts_with("POST /v1/jobs/9/cancel HTTP/1.1"));
    let (url, server) = serve_once("200 OK", "not json");
    let e = Client::new(&url, "t").nodes().unwrap_err();
    assert!(matches!(e, ClientError::Decode(_)), "{e}");
    server.join().unwrap();
    // Nothing listens there any more.
    let e = Client::new(&url, "t")
        .with_timeout(Duration::from_secs(2))
        .nodes()
        .unwrap_err();
    assert!(matches!(e, ClientError::Unreachable(_)), "{e}");
    assert!(e.to_string().starts_with("reaching the server: "), "{e}");
}
