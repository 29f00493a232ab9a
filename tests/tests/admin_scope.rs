//! The scope rule over the whole admin API, as a randomized property test against the real
//! server: random account trees, users in random accounts with random groups of
//! permissions, and random API calls. No user ever reads or changes anything outside their
//! subtree or beyond their permissions, and every outside-scope answer is byte-identical to
//! the answer for an id that does not exist.
//!
//! The expected answer of each call comes from an oracle written here, from the rule
//! (not from the server's code): subtree by parent links, permissions by group membership.
//! Set `CONTERA_SCOPE_SEED` to replay one seed; a failure prints the seed and the call.

use std::collections::{BTreeSet, HashMap};

use contera_e2e::admin::{AdminClient, Answer, GOOD_PASSWORD};
use contera_e2e::{enroll_with_curl, Server};
use serde_json::{json, Value};

const PERMISSIONS: [&str; 10] = [
    "accounts.view",
    "accounts.manage",
    "users.view",
    "users.manage",
    "groups.manage",
    "codes.view",
    "codes.manage",
    "recorders.view",
    "recorders.manage",
    "audit.view",
];

/// splitmix64: a small, seedable generator, so a failing seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone)]
struct Acct {
    id: String,
    parent: Option<String>,
    code_public_id: String,
    recorder: Option<String>,
    group_id: String,
    user_id: String,
}

struct Actor {
    client: AdminClient,
    account: String,
    permissions: BTreeSet<&'static str>,
}

struct World {
    accounts: Vec<Acct>,
    parents: HashMap<String, Option<String>>,
}

impl World {
    fn within(&self, root: &str, id: &str) -> bool {
        let mut current = Some(id.to_owned());
        while let Some(c) = current {
            if c == root {
                return true;
            }
            current = self.parents.get(&c).cloned().flatten();
        }
        false
    }
}

/// What the oracle says a call must get.
#[derive(Debug, PartialEq)]
enum Expect {
    Allowed,
    Forbidden,
    NotFound,
}

fn expect(world: &World, actor: &Actor, target: &str, needs: &str) -> Expect {
    if !world.within(&actor.account, target) {
        Expect::NotFound
    } else if !actor.permissions.contains(needs) {
        Expect::Forbidden
    } else {
        Expect::Allowed
    }
}

fn random_uuid(rng: &mut Rng) -> String {
    let a = rng.next();
    let b = rng.next();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn build_world(server: &Server, rng: &mut Rng, scratch: &std::path::Path) -> (World, Vec<Actor>) {
    let mut accounts: Vec<Acct> = Vec::new();
    let n = 7 + rng.below(5);
    for i in 0..n {
        // A root partner first; afterwards a random existing partner as parent, or a second
        // root now and then, so siblings and separate trees both occur.
        let partners: Vec<&Acct> = accounts.iter().collect();
        let parent = if i == 0 || (i == 3 && rng.chance(50)) {
            None
        } else {
            Some(partners[rng.below(partners.len())].id.clone())
        };
        let (id, code) = server.create_account(&format!("Acct {i}"), "partner", parent.as_deref());
        let recorder = rng
            .chance(60)
            .then(|| enroll_with_curl(server, &code, &format!("SCOPE-{i}"), scratch).recorder_id);
        let code_public_id = server.admin_json(&["accounts", "show", &id])["code_public_id"]
            .as_str()
            .unwrap()
            .to_owned();
        accounts.push(Acct {
            id,
            parent,
            code_public_id,
            recorder,
            group_id: String::new(),
            user_id: String::new(),
        });
    }
    let parents = accounts
        .iter()
        .map(|a| (a.id.clone(), a.parent.clone()))
        .collect();
    let mut actors = Vec::new();
    for (i, acct) in accounts.iter_mut().enumerate() {
        // One user per account, in a group with a random set of permissions (sometimes all,
        // sometimes none), so both scope and permission refusals occur.
        let permissions: BTreeSet<&'static str> = match rng.below(5) {
            0 => PERMISSIONS.into_iter().collect(),
            1 => BTreeSet::new(),
            _ => PERMISSIONS.into_iter().filter(|_| rng.chance(50)).collect(),
        };
        let mut args = vec![
            "groups".to_owned(),
            "create".into(),
            "--account".into(),
            acct.id.clone(),
            "--name".into(),
            format!("Random {i}"),
        ];
        for p in &permissions {
            args.extend(["--permission".into(), (*p).into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let group = server.admin_json(&args);
        acct.group_id = group["id"].as_str().unwrap().to_owned();
        let email = format!("user{i}@scope.test");
        let invited = server.admin_json(&[
            "users",
            "invite",
            "--account",
            &acct.id,
            "--email",
            &email,
            "--name",
            "Scope User",
            "--group",
            &format!("Random {i}"),
        ]);
        let token = invited["token"].as_str().unwrap();
        let mut client = AdminClient::new(server);
        let accepted = client.accept(token, GOOD_PASSWORD).expect(200);
        acct.user_id = accepted.body["user"]["id"].as_str().unwrap().to_owned();
        actors.push(Actor {
            client,
            account: acct.id.clone(),
            permissions,
        });
    }
    (World { accounts, parents }, actors)
}

/// One kind of call: method, path and body for a target account (and a random id to compare
/// a refusal with), and the permission it needs on the target.
struct Call {
    method: &'static str,
    needs: &'static str,
    path: fn(&Acct) -> Option<String>,
    /// The same path with an id that does not exist.
    missing: fn(&str) -> String,
    body: fn(&Actor) -> Option<Value>,
}

fn calls() -> Vec<Call> {
    vec![
        Call {
            method: "GET",
            needs: "accounts.view",
            path: |a| Some(format!("/accounts/{}", a.id)),
            missing: |u| format!("/accounts/{u}"),
            body: |_| None,
        },
        Call {
            method: "PATCH",
            needs: "accounts.manage",
            path: |a| Some(format!("/accounts/{}", a.id)),
            missing: |u| format!("/accounts/{u}"),
            body: |_| Some(json!({ "address": "1 Scope Street" })),
        },
        Call {
            method: "GET",
            needs: "codes.view",
            path: |a| Some(format!("/accounts/{}/codes", a.id)),
            missing: |u| format!("/accounts/{u}/codes"),
            body: |_| None,
        },
        Call {
            method: "GET",
            needs: "codes.view",
            path: |a| Some(format!("/codes/{}", a.code_public_id)),
            missing: |_| "/codes/ZZZZ".to_owned(),
            body: |_| None,
        },
        Call {
            method: "POST",
            needs: "codes.manage",
            path: |a| Some(format!("/accounts/{}/codes", a.id)),
            missing: |u| format!("/accounts/{u}/codes"),
            body: |_| Some(json!({ "label": "scope test" })),
        },
        Call {
            method: "GET",
            needs: "users.view",
            path: |a| Some(format!("/accounts/{}/users", a.id)),
            missing: |u| format!("/accounts/{u}/users"),
            body: |_| None,
        },
        Call {
            method: "GET",
            needs: "users.view",
            path: |a| Some(format!("/users/{}", a.user_id)),
            missing: |u| format!("/users/{u}"),
            body: |_| None,
        },
        Call {
            method: "GET",
            needs: "users.view",
            path: |a| Some(format!("/accounts/{}/groups", a.id)),
            missing: |u| format!("/accounts/{u}/groups"),
            body: |_| None,
        },
        Call {
            method: "GET",
            needs: "users.view",
            path: |a| Some(format!("/groups/{}/members", a.group_id)),
            missing: |u| format!("/groups/{u}/members"),
            body: |_| None,
        },
        Call {
            method: "POST",
            needs: "groups.manage",
            path: |a| Some(format!("/accounts/{}/groups", a.id)),
            missing: |u| format!("/accounts/{u}/groups"),
            // Only permissions the caller holds: granting those is allowed.
            body: |actor| {
                let mine: Vec<&str> = actor.permissions.iter().copied().take(2).collect();
                Some(json!({ "name": format!("g-{}", uuid_like()), "permissions": mine }))
            },
        },
        Call {
            method: "GET",
            needs: "recorders.view",
            path: |a| Some(format!("/recorders?account={}", a.id)),
            missing: |u| format!("/recorders?account={u}"),
            body: |_| None,
        },
        Call {
            method: "GET",
            needs: "recorders.view",
            path: |a| a.recorder.as_ref().map(|r| format!("/recorders/{r}")),
            missing: |u| format!("/recorders/{u}"),
            body: |_| None,
        },
        Call {
            method: "PATCH",
            needs: "recorders.manage",
            path: |a| a.recorder.as_ref().map(|r| format!("/recorders/{r}")),
            missing: |u| format!("/recorders/{u}"),
            body: |_| Some(json!({ "name": "renamed by scope test" })),
        },
        Call {
            method: "GET",
            needs: "audit.view",
            path: |a| Some(format!("/audit?account={}", a.id)),
            missing: |u| format!("/audit?account={u}"),
            body: |_| None,
        },
    ]
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn same_answer(a: &Answer, b: &Answer) -> bool {
    a.status == b.status && a.text == b.text
}

/// Lists must hold nothing outside the caller's subtree.
fn check_lists(world: &World, actor: &Actor, seed: u64) {
    if actor.permissions.contains("accounts.view") {
        let mut cursor: Option<String> = None;
        let mut seen = BTreeSet::new();
        loop {
            let path = match &cursor {
                Some(c) => format!("/accounts?limit=3&cursor={c}"),
                None => "/accounts?limit=3".to_owned(),
            };
            let page = actor.client.get(&path).expect(200);
            for item in page.body["items"].as_array().unwrap() {
                let id = item["id"].as_str().unwrap().to_owned();
                assert!(
                    world.within(&actor.account, &id),
                    "seed {seed}: GET /accounts listed {id} outside {}",
                    actor.account
                );
                assert!(seen.insert(id), "seed {seed}: an account listed twice");
            }
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let expected: BTreeSet<String> = world
            .accounts
            .iter()
            .filter(|a| world.within(&actor.account, &a.id))
            .map(|a| a.id.clone())
            .collect();
        assert_eq!(
            seen, expected,
            "seed {seed}: GET /accounts is not exactly the subtree"
        );
    }
    if actor.permissions.contains("recorders.view") {
        let page = actor
            .client
            .get(&format!("/recorders?account={}&limit=500", actor.account))
            .expect(200);
        for item in page.body["items"].as_array().unwrap() {
            let account = item["account_id"].as_str().unwrap();
            assert!(
                world.within(&actor.account, account),
                "seed {seed}: GET /recorders listed a recorder of {account}"
            );
        }
    }
}

fn run_seed(seed: u64) {
    let server = Server::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed);
    let (world, actors) = build_world(&server, &mut rng, scratch.path());
    let calls = calls();
    let mut outcomes: HashMap<&'static str, usize> = HashMap::new();
    for actor in &actors {
        check_lists(&world, actor, seed);
    }
    for _ in 0..160 {
        let actor = &actors[rng.below(actors.len())];
        let target = &world.accounts[rng.below(world.accounts.len())];
        let call = &calls[rng.below(calls.len())];
        let Some(path) = (call.path)(target) else {
            continue;
        };
        let body = (call.body)(actor);
        let answer = actor.client.request(call.method, &path, body.as_ref());
        let expected = expect(&world, actor, &target.id, call.needs);
        let what = format!(
            "seed {seed}: {} {path} by a user of {} holding {:?} on target {}: expected {expected:?}, got {} {}",
            call.method, actor.account, actor.permissions, target.id, answer.status, answer.text
        );
        match expected {
            Expect::Allowed => {
                assert!((200..300).contains(&answer.status), "{what}");
                *outcomes.entry("allowed").or_default() += 1;
            }
            Expect::Forbidden => {
                assert_eq!(answer.status, 403, "{what}");
                *outcomes.entry("forbidden").or_default() += 1;
            }
            Expect::NotFound => {
                assert_eq!(answer.status, 404, "{what}");
                let missing = (call.missing)(&random_uuid(&mut rng));
                let unknown = actor.client.request(call.method, &missing, body.as_ref());
                assert!(
                    same_answer(&answer, &unknown),
                    "{what}\nbut an unknown id got {} {}",
                    unknown.status,
                    unknown.text
                );
                *outcomes.entry("not_found").or_default() += 1;
            }
        }
    }
    // A group with more than the caller holds is never granted, in scope or not.
    for actor in &actors {
        let Some(missing) = PERMISSIONS
            .into_iter()
            .find(|p| !actor.permissions.contains(p))
        else {
            continue;
        };
        let answer = actor.client.post(
            &format!("/accounts/{}/groups", actor.account),
            &json!({ "name": format!("escalate-{}", uuid_like()), "permissions": [missing] }),
        );
        assert_eq!(
            answer.status, 403,
            "seed {seed}: a user without {missing} created a group holding it: {}",
            answer.text
        );
    }
    eprintln!("seed {seed}: outcomes {outcomes:?}");
    for kind in ["allowed", "forbidden", "not_found"] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 0,
            "seed {seed}: no call was {kind}: the random world did not exercise the rule ({outcomes:?})"
        );
    }
}

#[test]
fn no_user_reaches_outside_their_subtree_or_beyond_their_permissions() {
    let seeds: Vec<u64> = match std::env::var("CONTERA_SCOPE_SEED") {
        Ok(s) => vec![s.parse().expect("CONTERA_SCOPE_SEED is a number")],
        Err(_) => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            vec![base, base ^ 0x5555_5555, base.rotate_left(17)]
        }
    };
    for seed in seeds {
        eprintln!("admin scope property test: seed {seed} (replay with CONTERA_SCOPE_SEED={seed})");
        run_seed(seed);
    }
}
