use http::{HeaderMap, Method};
use serde_json::Value;

use super::testing::{get, intent, tuple_of};
use super::*;
use crate::vendors;

/// Every operation of every generated catalog file matches its own template, with its
/// parameters in the resource.
#[test]
fn every_catalog_operation_matches_itself() {
    let intent = intent();
    let mut checked = 0;
    for (name, text) in vendors::catalog_files() {
        let file: Value = serde_json::from_str(text).unwrap();
        let hosts = file["hosts"].as_array().unwrap();
        for op in file["operations"].as_array().into_iter().flatten() {
            let host = op
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_else(|| hosts[0].as_str().unwrap());
            let template = op["path"].as_str().unwrap();
            let mut n = 0;
            let path: Vec<String> = template
                .split('/')
                .map(|seg| {
                    if seg.starts_with("{+") {
                        n += 1;
                        format!("zq{n}/sub/dir.txt")
                    } else if seg.starts_with('{') {
                        n += 1;
                        format!("zq{n}")
                    } else {
                        seg.to_owned()
                    }
                })
                .collect();
            let path = path.join("/");
            let method = match op["method"].as_str().unwrap() {
                "*" => "POST",
                m => m,
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let found = intent
                .catalog()
                .host(host)
                .and_then(|h| h.find(&method, &path))
                .unwrap_or_else(|| panic!("{name}: {method} {path} ({template}) not found"));
            // Operations told apart by a query parameter (git's info/refs?service=).
            let route = match (op.get("query"), &found.route.by_query) {
                (Some(Value::Object(q)), Some(by)) => {
                    let want = q[&*by.param].as_str().unwrap();
                    &by.operations.iter().find(|(v, _)| &**v == want).unwrap().1
                }
                _ => found.route,
            };
            assert_eq!(
                &*route.action,
                op["action"].as_str().unwrap(),
                "{name}: {method} {path} matched {} instead",
                route.template
            );
            checked += 1;
        }
    }
    assert!(checked > 1500, "only {checked} operations");
}

#[test]
fn unknown_paths_and_hosts() {
    let intent = intent();
    let t = get(&intent, "api.github.com", "/definitely/not/an/api");
    assert_eq!((&*t.action, t.class), ("github.unknown", Class::Unknown));
    assert_eq!(t.json["action"]["properties"]["known"], false);
    assert_eq!(t.json["context"]["path"], "/definitely/not/an/api");
    let t = tuple_of(&intent, "PUT", "example.com", "/x", &HeaderMap::new(), b"").unwrap();
    assert_eq!(&*t.action, "http.put");
    assert_eq!(
        t.json["resource"],
        serde_json::json!({"type": "host", "id": "example.com", "properties": {}})
    );
    assert_eq!(t.json["action"]["properties"]["service"], Value::Null);
    // Empty segments do not match parameters.
    assert_eq!(
        &*get(&intent, "api.github.com", "/repos//web/issues").action,
        "github.unknown"
    );
}

#[test]
fn ambiguous_paths_are_refused() {
    let intent = intent();
    for path in [
        "/repos/acme%2Fweb/issues",
        "/repos/acme/web/../../admin",
        "/repos/a/%252e%252e/x",
        "/a\\b",
    ] {
        let e = tuple_of(
            &intent,
            "GET",
            "api.github.com",
            path,
            &HeaderMap::new(),
            b"",
        );
        assert!(matches!(e, Err(IntentError::Path(_))), "{path}");
    }
}

#[test]
fn method_overrides_are_refused_whatever_they_say() {
    let intent = intent();
    for (method, name, value) in [
        ("DELETE", "x-http-method-override", "GET"),
        ("POST", "x-http-method-override", "delete"),
        ("POST", "x-http-method", "BAD METHOD"),
        ("PUT", "x-method-override", "PUT"),
        ("GET", "X-HTTP-Method-Override", ""),
    ] {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let r = tuple_of(
            &intent,
            method,
            "api.github.com",
            "/repos/acme/web",
            &h,
            b"",
        );
        assert!(
            matches!(r, Err(IntentError::MethodOverride(_))),
            "{method} with {name}: {value}"
        );
    }
}

#[test]
fn meaning_headers_must_be_single_and_bodies_plain_utf8() {
    let intent = intent();
    let mut h = HeaderMap::new();
    h.append("content-type", "application/json".parse().unwrap());
    h.append("content-type", "text/plain".parse().unwrap());
    let r = tuple_of(
        &intent,
        "POST",
        "api.github.com",
        "/repos/acme/web/issues",
        &h,
        b"{}",
    );
    assert!(matches!(r, Err(IntentError::Ambiguous(_))), "{r:?}");
    // Inspected bodies: no content coding, UTF-8 only.
    let body = br#"{"channel":"C1","text":"hi"}"#;
    for (name, value) in [
        ("content-encoding", "gzip"),
        ("content-type", "application/json; charset=utf-16"),
    ] {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert(
            http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let r = tuple_of(
            &intent,
            "POST",
            "slack.com",
            "/api/chat.postMessage",
            &h,
            body,
        );
        assert!(
            matches!(r, Err(IntentError::Ambiguous(_))),
            "{name}: {value}: {r:?}"
        );
    }
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/json; charset=UTF-8".parse().unwrap(),
    );
    let t = tuple_of(
        &intent,
        "POST",
        "slack.com",
        "/api/chat.postMessage",
        &h,
        body,
    )
    .unwrap();
    assert_eq!(t.resource_id, "C1");
}

#[test]
fn upgrades_only_where_listed() {
    let intent = intent().with_upgrades(vec![crate::intent::UpgradeRoute {
        host: "api.github.com".into(),
        path: "/ws".into(),
        protocols: vec!["websocket".into()],
    }]);
    let mut h = HeaderMap::new();
    h.insert("upgrade", "WebSocket".parse().unwrap());
    assert!(intent.check_upgrade("api.github.com", "/ws", &h).is_ok());
    for (host, path, proto) in [
        ("api.github.com", "/ws2", "websocket"),
        ("slack.com", "/ws", "websocket"),
        ("api.github.com", "/ws", "h2c"),
        ("api.github.com", "/ws", "websocket, h2c"),
        ("api.github.com", "/%77s", "websocket"),
    ] {
        let mut h = HeaderMap::new();
        h.insert("upgrade", proto.parse().unwrap());
        assert!(
            matches!(
                intent.check_upgrade(host, path, &h),
                Err(IntentError::UpgradeNotAllowed { .. })
            ),
            "{host}{path} {proto}"
        );
    }
}
