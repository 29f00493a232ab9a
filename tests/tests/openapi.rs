//! The admin API's OpenAPI document (`GET /api/v1/openapi.json`) is valid OpenAPI 3.1 by
//! an independent validator, and it is the whole truth about the routes: every documented
//! operation is served, every other method of a documented path is 405, and the source
//! has no admin route that bypasses the document. Every operation has a unique
//! operationId, declares its security unless it is one of the public ones, and documents
//! its 4xx answers with the one error schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use contera_e2e::admin::{first_administrator, AdminClient};
use contera_e2e::{skip, Server};
use serde_json::{json, Value};

/// The methods a path item can hold (OpenAPI 3.1).
const ALL_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// The methods every documented path is tried with.
const TRIED_METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
/// The router's answer for a path it does not have.
const FALLBACK: &str = "no such endpoint; the API lives under /api/v1";
/// The operations anyone may call: (method, path).
const PUBLIC: [(&str, &str); 5] = [
    ("post", "/api/v1/admin/session/login"),
    ("post", "/api/v1/admin/session/forgot"),
    ("post", "/api/v1/admin/session/reset"),
    ("post", "/api/v1/admin/invitations/accept"),
    ("get", "/api/v1/admin/terms"),
];
const ERROR_SCHEMA: &str = "#/components/schemas/Error";

fn document(server: &Server) -> Value {
    let answer = AdminClient::new(server)
        .get("/api/v1/openapi.json")
        .expect(200);
    assert!(answer.body.is_object(), "not JSON: {}", answer.text);
    answer.body
}

/// Every (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut all = Vec::new();
    for (path, item) in paths {
        for method in ALL_METHODS {
            if let Some(op) = item.get(method) {
                all.push((path.clone(), method.to_owned(), op.clone()));
            }
        }
    }
    assert!(!all.is_empty(), "no operations: {doc}");
    all
}

fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("the kernel's random UUID")
        .trim()
        .to_owned()
}

/// `path` with every `{placeholder}` segment replaced by a random UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                random_uuid()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The validator to run: `$CONTERA_OPENAPI_VALIDATOR` (set by `.ci/run`), else
/// `openapi-spec-validator` on PATH.
fn validator() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("CONTERA_OPENAPI_VALIDATOR").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(given));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join("openapi-spec-validator"))
        .find(|candidate| candidate.is_file())
}

#[test]
fn the_document_is_openapi_3_1_and_passes_an_independent_validator() {
    let server = Server::start();
    let doc = document(&server);
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}, not 3.1");
    for (path, _, _) in operations(&doc) {
        assert!(path.starts_with("/api/v1/admin/"), "{path}");
    }
    let Some(validator) = validator() else {
        skip(
            "the_document_is_openapi_3_1_and_passes_an_independent_validator",
            "no OpenAPI validator: set CONTERA_OPENAPI_VALIDATOR or put openapi-spec-validator \
             on PATH (pip install openapi-spec-validator)",
        );
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(&validator)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", validator.display()));
    assert!(
        out.status.success(),
        "{} refused the document:\n{}{}",
        validator.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_documented_operation_is_served_and_every_other_method_is_405() {
    let server = Server::start();
    let (admin, _, _) = first_administrator(&server, "Acme", "openapi@acme.test");
    let doc = document(&server);
    let mut ops = operations(&doc);
    // Logging out ends the session the other requests use: last.
    ops.sort_by_key(|(path, method, _)| {
        (
            path.ends_with("/session/logout"),
            path.clone(),
            method.clone(),
        )
    });
    for (path, method, _) in &ops {
        let url = concrete(path);
        let body = matches!(method.as_str(), "post" | "put" | "patch").then(|| json!({}));
        let answer = admin.request(&method.to_uppercase(), &url, body.as_ref());
        assert_ne!(
            answer.status, 405,
            "{method} {path} is documented but not routed: {}",
            answer.text
        );
        assert!(
            !(answer.status == 404 && answer.body["error"]["message"] == json!(FALLBACK)),
            "{method} {path} is documented but the router does not know it: {}",
            answer.text
        );
    }

    let mut documented: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (path, method, _) in &ops {
        documented.entry(path).or_default().insert(method);
    }
    let anonymous = admin.fresh();
    for (path, methods) in &documented {
        for method in TRIED_METHODS.iter().filter(|m| !methods.contains(*m)) {
            let body = matches!(*method, "post" | "put" | "patch").then(|| json!({}));
            let answer = anonymous.request(&method.to_uppercase(), &concrete(path), body.as_ref());
            assert_eq!(
                answer.status, 405,
                "{method} {path} is not documented, yet answered: {}",
                answer.text
            );
            assert_eq!(answer.error_code(), "method_not_allowed", "{}", answer.text);
            let allow: BTreeSet<String> = answer
                .header("allow")
                .unwrap_or_else(|| panic!("405 without Allow for {method} {path}"))
                .split(',')
                .map(|m| m.trim().to_ascii_lowercase())
                .collect();
            for m in methods {
                assert!(allow.contains(*m), "Allow {allow:?} lacks {m} for {path}");
            }
            assert!(!allow.contains(*method), "Allow {allow:?} for {path}");
        }
    }
}

/// Every `.rs` file under `provisioning-server/src/admin/`, with its text.
fn admin_sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../provisioning-server/src/admin");
    let mut out = Vec::new();
    walk(&dir, &mut out);
    out.sort();
    assert!(
        out.iter().any(|(p, _)| p.ends_with("admin/mod.rs")),
        "no admin/mod.rs under {}",
        dir.display()
    );
    out
}

/// The text without comment lines (`//`, `///`, `//!`), each kept line with its number.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(i, line)| (i + 1, line))
        .collect()
}

/// The text with comment lines blanked (line numbers stay).
fn code_text(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A handler: its file, the line of its `#[utoipa::path]`, its name and the attribute's text.
struct Handler {
    file: PathBuf,
    line: usize,
    name: String,
    attribute: String,
}

/// Every function with a `#[utoipa::path(...)]` attribute.
fn handlers(sources: &[(PathBuf, String)]) -> Vec<Handler> {
    let mut found = Vec::new();
    for (file, text) in sources {
        let mut pending: Option<(usize, String)> = None;
        for (number, line) in code_lines(text) {
            if line.contains("#[utoipa::path") {
                pending = Some((number, String::new()));
            }
            let Some((start, attribute)) = pending.as_mut() else {
                continue;
            };
            attribute.push_str(line);
            attribute.push('\n');
            let signature = line.trim_start();
            let signature = signature
                .strip_prefix("pub(crate) ")
                .or_else(|| signature.strip_prefix("pub(super) "))
                .or_else(|| signature.strip_prefix("pub "))
                .unwrap_or(signature);
            let signature = signature.strip_prefix("async ").unwrap_or(signature);
            if let Some(rest) = signature.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(Handler {
                    file: file.clone(),
                    line: *start,
                    name,
                    attribute: std::mem::take(attribute),
                });
                pending = None;
            }
        }
    }
    found
}

/// The items of every `routes!(...)` in the file, as written (e.g. `list`, `tokens::list`).
fn routes_macro_items(text: &str) -> Vec<String> {
    let code = code_text(text);
    let mut items = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("routes!(") {
        let after = &rest[at + "routes!(".len()..];
        let end = after.find(')').expect("routes!( is closed");
        items.extend(
            after[..end]
                .split(',')
                .map(|i| i.trim().to_owned())
                .filter(|i| !i.is_empty()),
        );
        rest = &after[end..];
    }
    items
}

/// The module name a file's handlers are reached by: its stem, or its directory's name
/// for a `mod.rs`.
fn module_name(file: &Path) -> String {
    let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
    if stem == "mod" {
        file.parent()
            .and_then(Path::file_name)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    } else {
        stem
    }
}

#[test]
fn no_admin_route_bypasses_the_document() {
    let sources = admin_sources();
    let mut bypassing = Vec::new();
    let mut openapi_routes = 0;
    for (file, text) in &sources {
        let code = code_text(text);
        let line_of = |at: usize| code[..at].matches('\n').count() + 1;
        let line_text = |at: usize| code.lines().nth(line_of(at) - 1).unwrap_or("").trim();
        for (at, _) in code.match_indices(".route(") {
            // The first argument may be on the next line.
            if code[at + ".route(".len()..]
                .trim_start()
                .starts_with("OPENAPI_PATH")
            {
                openapi_routes += 1;
            } else {
                bypassing.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    line_of(at),
                    line_text(at)
                ));
            }
        }
        for raw in [".route_service(", ".nest_service("] {
            for (at, _) in code.match_indices(raw) {
                bypassing.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    line_of(at),
                    line_text(at)
                ));
            }
        }
    }
    assert!(
        bypassing.is_empty(),
        "admin routes must be registered with .routes(routes!(handler)) so the OpenAPI \
         document lists them; these are not:\n{}",
        bypassing.join("\n")
    );
    assert_eq!(openapi_routes, 1, "the one .route( serving OPENAPI_PATH");

    let found = handlers(&sources);
    for known in ["login", "logout", "me"] {
        assert!(
            found.iter().any(|h| h.name == known),
            "the scan did not find the handler {known}"
        );
    }
    let everywhere: Vec<String> = sources
        .iter()
        .flat_map(|(_, text)| routes_macro_items(text))
        .collect();
    let mut unregistered = Vec::new();
    for handler in &found {
        let own = sources
            .iter()
            .find(|(f, _)| *f == handler.file)
            .map(|(_, t)| routes_macro_items(t))
            .unwrap_or_default();
        let by_module = format!("{}::{}", module_name(&handler.file), handler.name);
        let registered = own
            .iter()
            .any(|i| *i == handler.name || *i == format!("self::{}", handler.name))
            || everywhere.iter().any(|i| i.ends_with(&by_module));
        if !registered {
            unregistered.push(format!(
                "{}:{}: {}",
                handler.file.display(),
                handler.line,
                handler.name
            ));
        }
    }
    assert!(
        unregistered.is_empty(),
        "handlers with #[utoipa::path] that no routes!(...) registers (documented but \
         not served):\n{}",
        unregistered.join("\n")
    );
}

#[test]
fn every_handler_names_its_operation_id_explicitly() {
    let found = handlers(&admin_sources());
    assert!(found.len() >= 10, "found only {} handlers", found.len());
    let implicit: Vec<String> = found
        .iter()
        .filter(|h| !h.attribute.contains("operation_id"))
        .map(|h| format!("{}:{}: {}", h.file.display(), h.line, h.name))
        .collect();
    assert!(
        implicit.is_empty(),
        "#[utoipa::path] without operation_id = \"...\" (the function name is used, and \
         two areas' `list` would collide):\n{}",
        implicit.join("\n")
    );
}

/// A response, following a `$ref` into `components/responses`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("unexpected response $ref {reference}"));
            &doc["components"]["responses"][name]
        }
        None => response,
    }
}

#[test]
fn operations_have_unique_ids_declare_security_and_answer_errors_in_the_error_schema() {
    let server = Server::start();
    let doc = document(&server);
    let ops = operations(&doc);
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    assert_eq!(
        doc["components"]["securitySchemes"]["session"],
        json!({ "type": "apiKey", "in": "cookie", "name": "__Host-contera_session" })
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["token"],
        json!({ "type": "http", "scheme": "bearer" })
    );
    let error = &doc["components"]["schemas"]["Error"];
    assert!(
        error["properties"]["error"].is_object(),
        "the Error schema has an error object: {error}"
    );

    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, method, op) in &ops {
        let here = format!("{method} {path}");
        match op["operationId"].as_str() {
            None => problems.push(format!("{here}: no operationId")),
            Some(id) => {
                if let Some(other) = ids.insert(id.to_owned(), here.clone()) {
                    problems.push(format!("{here}: operationId {id} is also {other}'s"));
                }
            }
        }
        if !PUBLIC.contains(&(method.as_str(), path.as_str())) {
            match op["security"].as_array() {
                Some(list) if !list.is_empty() => {
                    for requirement in list {
                        for name in requirement.as_object().into_iter().flat_map(|o| o.keys()) {
                            if !schemes.contains_key(name) {
                                problems.push(format!("{here}: unknown security scheme {name}"));
                            }
                        }
                    }
                }
                _ => problems.push(format!("{here}: declares no security")),
            }
        }
        let responses = op["responses"].as_object();
        for (status, response) in responses.into_iter().flatten() {
            if !status.starts_with('4') {
                continue;
            }
            let schema = &resolve(&doc, response)["content"]["application/json"]["schema"];
            if schema["$ref"] != json!(ERROR_SCHEMA) {
                problems.push(format!(
                    "{here}: {status} does not reference {ERROR_SCHEMA}: {response}"
                ));
            }
        }
    }
    for (method, path) in PUBLIC {
        assert!(
            ops.iter().any(|(p, m, _)| p == path && m == method),
            "the public operation {method} {path} is not documented"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
