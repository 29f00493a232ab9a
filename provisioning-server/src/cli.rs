//! The admin command line: `serve` and the commands that manage accounts, codes and
//! recorders directly in the database (safe while the server runs).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::accounts::{self, CodeLimits};
use crate::config::{ConfigError, ServerConfig};
use crate::mail::{self, Delivery, Mailer};
use crate::permissions::{Permission, PermissionSet};
use crate::secrets::CodeKey;
use crate::store::{Account, AccountKind, CodeInfo, Group, Recorder, Store, User};
use crate::terminal::{safe, safe_json};
use crate::users;

/// Exit code for usage and configuration errors (a unit lists it in RestartPreventExitStatus).
pub const EXIT_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "contera-provisioning",
    version,
    about = "Contera provisioning server and its admin commands"
)]
pub struct Cli {
    /// Data directory: the SQLite database and tls/ live here [default: /var/lib/contera-provisioning]
    #[arg(long, global = true, env = "CONTERA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Optional TOML config file; flags override it
    #[arg(long, global = true, env = "CONTERA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS API
    Serve(ServeArgs),
    /// Manage accounts
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage registration codes
    #[command(subcommand)]
    Codes(CodesCommand),
    /// List and revoke recorders
    #[command(subcommand)]
    Recorders(RecordersCommand),
    /// Invite, list, disable and enable users
    #[command(subcommand)]
    Users(UsersCommand),
    /// List and create groups of permissions
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Show the audit log, newest first
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Check the mail settings
    #[command(subcommand)]
    Mail(MailCommand),
    /// Check the configuration and exit (0 valid, 2 invalid)
    ValidateConfig,
    /// Print the default configuration as TOML
    PrintDefaultConfig,
}

#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// Send a test message through the configured SMTP relay, or write it to the outbox
    /// (DATA/outbox/) when there is none, and say which
    Test {
        /// Recipient address
        #[arg(long, value_name = "ADDRESS")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Invite a user into an account and print the link that accepts the invitation (valid
    /// 72 hours); this is how an account's first administrator is made
    Invite {
        #[arg(long)]
        account: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Group to join [default: Administrators]
        #[arg(long)]
        group: Option<String>,
        /// Base of the accept link [default: [mail] public_base_url, else https:// and the console's listen address]
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Issue a new invitation link for an invited user; the previous link stops working
    Resend {
        /// User id or email
        user: String,
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List users, of one account or of all
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable an active user (refused for an account's last active administrator)
    Disable {
        /// User id or email
        user: String,
    },
    /// Enable a disabled user again
    Enable {
        /// User id or email
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List an account's groups with their permissions
    List {
        #[arg(long)]
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a group holding the given permissions
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: String,
        /// A permission the group holds; repeat for several
        #[arg(long = "permission", value_name = "PERMISSION", value_parser = parse_permission)]
        permissions: Vec<Permission>,
        #[arg(long)]
        json: bool,
    },
}

/// `--permission`: one of the ten names; a bad one is a usage error (exit 2) naming them.
fn parse_permission(text: &str) -> Result<Permission, String> {
    text.parse()
        .map_err(|e: crate::permissions::UnknownPermission| e.to_string())
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks a free port)
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Heartbeat interval recorders are told to use, in seconds
    #[arg(long = "heartbeat-interval", value_name = "SECS")]
    pub heartbeat_interval_secs: Option<u32>,
    /// Address the web console listens on, e.g. 127.0.0.1:8444 (port 0 picks a free port)
    #[arg(long = "console-listen")]
    pub console_listen: Option<std::net::SocketAddr>,
    /// Address the Prometheus metrics listener listens on, e.g. 127.0.0.1:9464 (port 0
    /// picks a free port)
    #[arg(long = "metrics-listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account and print its registration code (`codes show` prints it again)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = AccountKind::Customer)]
        kind: AccountKind,
        /// Id of the partner account that holds it
        #[arg(long)]
        parent: Option<String>,
        /// Postal address (at most 500 characters; may span lines)
        #[arg(long)]
        address: Option<String>,
        /// Who to call about the account: name, phone, e-mail (at most 200 characters)
        #[arg(long)]
        contact: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List accounts as a tree; disabled ones are marked
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one account with its details
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an account's name, address or contact (an empty --contact clears it)
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        contact: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable an account and its whole subtree: enrollments and renewals are refused and
    /// its recorders are told so at their next heartbeat
    Disable { id: String },
    /// Enable a disabled account again: its subtree works again at once
    Enable { id: String },
}

#[derive(Debug, Subcommand)]
pub enum CodesCommand {
    /// Replace an account's registration code; the old code stops working at once
    Rotate {
        #[arg(long)]
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// List an account's registration codes with their limits and last use (not the codes)
    List {
        #[arg(long)]
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a registration code to an account, next to its other codes, and print it
    Create {
        #[arg(long)]
        account: String,
        /// What the code is for, e.g. the installer or site it was given to
        #[arg(long, default_value = "")]
        label: String,
        /// The code stops enrolling this many days from now
        #[arg(long, value_name = "DAYS", conflicts_with = "expires_at")]
        expires_in_days: Option<u32>,
        /// The code stops enrolling at this time (RFC 3339, e.g. 2026-12-31T23:59:59Z)
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        expires_at: Option<i64>,
        /// How many enrollments the code allows in all (at least 1)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_uses: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Print a registration code again, decrypted with the data directory's code key
    Show {
        public_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Disable a registration code: it stops enrolling at the next attempt
    Disable { public_id: String },
}

#[derive(Debug, Subcommand)]
pub enum RecordersCommand {
    /// List recorders with their online state
    List {
        /// Only recorders in this account
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one recorder with the status it last reported
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a recorder: its next heartbeat is refused and it drops its credential
    Revoke { id: String },
}

/// Builds the effective configuration: defaults, then the file, then flags.
pub fn resolve_config(cli: &Cli) -> Result<ServerConfig, ConfigError> {
    let mut config = match &cli.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(dir) = &cli.data_dir {
        config.data_dir = dir.clone();
    }
    if let Command::Serve(args) = &cli.command {
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        if let Some(secs) = args.heartbeat_interval_secs {
            config.heartbeat_interval_secs = secs;
        }
        if let Some(listen) = args.console_listen {
            config.console.listen = listen;
        }
        if let Some(listen) = args.metrics_listen {
            config.metrics.listen = listen;
            config.metrics.enabled = true;
        }
    }
    config.validate()?;
    for warning in config.warnings() {
        log::warn!("{warning}");
    }
    if let Some(smtp) = config.mail.smtp.as_mut() {
        // systemd's LoadCredential= puts the password here; the library does not read
        // the environment itself.
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        smtp.read_password(credentials.as_deref())?;
    }
    Ok(config)
}

/// Runs a parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if matches!(cli.command, Command::PrintDefaultConfig) {
        print!("{}", crate::config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    let config = match resolve_config(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = match cli.command {
        Command::ValidateConfig => {
            println!("configuration is valid");
            Ok(())
        }
        Command::Serve(_) => serve(config).await,
        Command::Mail(MailCommand::Test { to }) => mail_test(&config, &to).await,
        command => admin(config, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends (or writes) one test message, so an admin sees the mail settings work before the
/// first invitation depends on them.
async fn mail_test(config: &ServerConfig, to: &str) -> anyhow::Result<()> {
    let mailer =
        Mailer::from_config(&config.mail, config.outbox_dir()).context("cannot set up mail")?;
    let email = mail::test_message(to)?;
    match mailer.send(&email).await? {
        Delivery::Sent { relay } => println!("sent a test message to {to} through {relay}"),
        Delivery::Written(path) => println!(
            "no SMTP relay configured ([mail.smtp]): wrote the test message to {}",
            path.display()
        ),
    }
    Ok(())
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    prepare_data_dir(&config)?;
    let fresh_sqlite =
        matches!(config.database(), Ok(crate::store::DatabaseUrl::Sqlite(path)) if !path.exists());
    if fresh_sqlite {
        log::info!(
            "fresh data directory: create the partner account with `contera-provisioning \
             accounts create --name NAME --kind partner`, then make its first administrator \
             with `contera-provisioning users invite --account ID --email EMAIL --name NAME`"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        signal_token.cancel();
    });
    crate::serve::launch(config, listener, shutdown).await
}

/// Makes everything this process creates owner-only and the data directory private, before
/// the first file in it is created: it holds the CA keys and every account's codes.
fn prepare_data_dir(config: &ServerConfig) -> anyhow::Result<()> {
    crate::files::restrict_umask();
    crate::files::prepare_data_dir(&config.data_dir).with_context(|| {
        format!(
            "preparing data directory {} (it must be owned by this user)",
            config.data_dir.display()
        )
    })?;
    Ok(())
}

async fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    prepare_data_dir(config)?;
    let database = config.database()?;
    crate::store::open(&database, 2)
        .await
        .with_context(|| format!("opening database {}", database.redacted()))
}

/// The key that seals registration codes, created on first use; a clear error when it is
/// missing while the database holds codes sealed with it.
async fn code_key(config: &ServerConfig, store: &Arc<dyn Store>) -> anyhow::Result<CodeKey> {
    let sealed = store.sealed_codes_exist().await?;
    CodeKey::load_or_create(&config.data_dir, sealed).context("loading the registration code key")
}

/// `--expires-at`: an RFC 3339 time as Unix seconds; a bad one is a usage error (exit 2).
fn parse_rfc3339(text: &str) -> Result<i64, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time such as 2026-12-31T23:59:59Z"))
}

/// Whether a code still enrolls, and if not why, in a word.
fn code_state(c: &CodeInfo, now: i64) -> &'static str {
    match accounts::CodeState::of(c, now) {
        accounts::CodeState::Active => "active",
        accounts::CodeState::Disabled => "disabled",
        accounts::CodeState::Expired => "expired",
        accounts::CodeState::UsedUp => "used up",
    }
}

fn code_json(c: &CodeInfo, now: i64) -> serde_json::Value {
    json!({
        "public_id": c.public_id,
        "account_id": c.account_id,
        "label": c.label,
        "state": code_state(c, now),
        "created_at": rfc3339(c.created_at),
        "created_by": c.created_by,
        "expires_at": c.expires_at.map(rfc3339),
        "max_uses": c.max_uses,
        "uses": c.uses,
        "disabled_at": c.disabled_at.map(rfc3339),
        "last_used_at": c.last_used_at.map(rfc3339),
        "last_used_recorder": c.last_used_recorder,
        "can_be_shown": c.sealed.is_some(),
    })
}

fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string())
}

/// `disabled` is whether the account is effectively disabled (itself or an ancestor);
/// `disabled_via` names the account whose switch does it, `disabled_at`/`disabled_by` say
/// when and by whom this account itself was disabled.
fn account_json(account: &Account) -> serde_json::Value {
    json!({
        "id": account.id,
        "name": account.name,
        "kind": account.kind,
        "parent_id": account.parent_id,
        "code_public_id": account.code_public_id,
        "created_at": rfc3339(account.created_at),
        "address": account.address,
        "contact": account.contact,
        "disabled": account.effectively_disabled(),
        "disabled_via": account.disabled_via,
        "disabled_at": account.disabled_at.map(rfc3339),
        "disabled_by": account.disabled_by,
    })
}

/// The disabled marker of the human listings: empty while enabled.
fn disabled_marker(account: &Account) -> String {
    match &account.disabled_via {
        None => String::new(),
        Some(via) if *via == account.id => "  [disabled]".to_string(),
        Some(via) => format!("  [disabled with {}]", safe(via)),
    }
}

fn print_account(account: &Account) {
    println!(
        "Account \"{}\" ({})",
        safe(&account.name),
        account.kind.as_str()
    );
    println!("  id:       {}", safe(&account.id));
    if let Some(parent) = &account.parent_id {
        println!("  parent:   {}", safe(parent));
    }
    println!(
        "  address:  {}",
        if account.address.is_empty() {
            "-".into()
        } else {
            safe(&account.address)
        }
    );
    println!(
        "  contact:  {}",
        safe(account.contact.as_deref().unwrap_or("-"))
    );
    println!(
        "  code:     {}-…",
        safe(account.code_public_id.as_deref().unwrap_or("none"))
    );
    let state = match (&account.disabled_via, account.disabled_at) {
        (None, _) => "enabled".to_string(),
        (Some(_), Some(at)) => format!(
            "disabled since {} by {}",
            rfc3339(at),
            account.disabled_by.as_deref().unwrap_or("?")
        ),
        (Some(via), None) => format!("disabled with account {via} above it"),
    };
    println!("  state:    {}", safe(&state));
}

/// Why an offline recorder is offline: its agent said goodbye, it was revoked, or its
/// heartbeats stopped.
fn offline_reason(r: &Recorder, now: i64) -> Option<String> {
    if r.revoked_at.is_some() {
        Some("revoked".into())
    } else if r.online(now) {
        None
    } else if let Some(reason) = &r.offline_reason {
        Some(reason.clone())
    } else if r.last_seen.is_some() {
        Some("missed heartbeats".into())
    } else {
        Some("never reported".into())
    }
}

/// An audit detail for one line of the human listing: the store writes compact JSON, kept
/// as JSON; anything else in the column is escaped as plain text so it stays on its line.
fn audit_detail(detail: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(detail) {
        Ok(value) => safe_json(&value.to_string()).into_owned(),
        Err(_) => safe(detail).into_owned(),
    }
}

/// Ids of the accounts that are effectively disabled, to mark their recorders.
async fn disabled_accounts(
    store: &Arc<dyn Store>,
) -> anyhow::Result<std::collections::HashSet<String>> {
    Ok(store
        .accounts()
        .await?
        .into_iter()
        .filter(Account::effectively_disabled)
        .map(|a| a.id)
        .collect())
}

/// `account_disabled`: the recorder still reports, but its account (or one above it) is
/// disabled, so it cannot renew and is told so at each heartbeat.
fn recorder_json(r: &Recorder, now: i64, account_disabled: bool) -> serde_json::Value {
    json!({
        "account_disabled": account_disabled,
        "id": r.id,
        "account_id": r.account_id,
        "name": r.name,
        "serial": r.serial,
        "model": r.model,
        "mac": r.mac,
        "firmware": r.firmware,
        "agent_version": r.agent_version,
        "online": r.online(now),
        "offline_reason": offline_reason(r, now),
        "last_seen": r.last_seen.map(rfc3339),
        "revoked": r.revoked_at.is_some(),
        "replaces": r.replaces,
        "enrolled_at": rfc3339(r.enrolled_at),
        "certificate_expires": r.cert_not_after.map(rfc3339),
    })
}

/// The accept link for an invitation. The token goes in the fragment, which browsers do not
/// send to servers or put in Referer headers; the console page posts it to the API.
fn accept_link(config: &ServerConfig, base_url: Option<&str>, token: &str) -> String {
    let base = match base_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => config
            .mail
            .public_base_url(config.console.listen)
            .trim_end_matches('/')
            .to_owned(),
    };
    format!("{base}/invitations/accept#token={token}")
}

fn print_invitation(invited: &users::Invited, link: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let mut value = serde_json::to_value(&invited.user)?;
        value["invitation_expires_at"] = json!(rfc3339(invited.expires_at));
        value["token"] = json!(invited.token);
        value["accept_link"] = json!(link);
        println!("{value:#}");
    } else {
        println!(
            "Invited {} <{}> into account {}, valid until {}.",
            safe(&invited.user.name),
            safe(&invited.user.email),
            invited.user.account_id,
            rfc3339(invited.expires_at)
        );
        println!("Accept link (shown once): {link}");
        println!("Token: {}", invited.token);
    }
    Ok(())
}

fn print_users(list: &[User], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{:#}", serde_json::to_value(list)?);
    } else if list.is_empty() {
        println!(
            "No users: invite one with `users invite --account ID --email EMAIL --name NAME`."
        );
    } else {
        println!(
            "{:<36}  {:<36}  {:<8}  {:<32}  {:<24}  GROUPS",
            "ID", "ACCOUNT", "STATUS", "EMAIL", "NAME"
        );
        for u in list {
            println!(
                "{:<36}  {:<36}  {:<8}  {:<32}  {:<24}  {}",
                u.id,
                u.account_id,
                u.status.as_str(),
                safe(&u.email),
                safe(&u.name),
                safe(&u.groups.join(", "))
            );
        }
    }
    Ok(())
}

fn print_groups(list: &[Group], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{:#}", serde_json::to_value(list)?);
    } else {
        println!(
            "{:<36}  {:<24}  {:<7}  PERMISSIONS",
            "ID", "NAME", "MEMBERS"
        );
        for g in list {
            let permissions: Vec<_> = g.permissions.iter().map(|p| p.as_str()).collect();
            println!(
                "{:<36}  {:<24}  {:<7}  {}",
                g.id,
                safe(&g.name),
                g.members,
                permissions.join(" ")
            );
        }
    }
    Ok(())
}

async fn admin(config: ServerConfig, command: Command) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let actor = cli_actor();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    match command {
        Command::Accounts(AccountsCommand::Create {
            name,
            kind,
            parent,
            address,
            contact,
            json,
        }) => {
            let key = code_key(&config, &store).await?;
            let details = accounts::Details { address, contact };
            let (account, code) = accounts::create_with_details(
                &store,
                &key,
                &name,
                kind,
                parent.as_deref(),
                &details,
                &actor,
            )
            .await?;
            if json {
                let mut value = account_json(&account);
                value["registration_code"] = json!(code.to_string());
                println!("{value:#}");
            } else {
                println!(
                    "Created {} account \"{}\"",
                    account.kind.as_str(),
                    safe(&account.name)
                );
                println!("  id:                {}", safe(&account.id));
                if let Some(parent) = &account.parent_id {
                    println!("  parent:            {}", safe(parent));
                }
                println!("  registration code: {code}");
                println!(
                    "Keep the code safe: `codes show {}` prints it again.",
                    code.public_id()
                );
            }
        }
        Command::Accounts(AccountsCommand::List { json }) => {
            let all = store.accounts().await?;
            if json {
                let list: Vec<_> = all.iter().map(account_json).collect();
                println!("{:#}", serde_json::Value::Array(list));
            } else if all.is_empty() {
                println!("No accounts yet: create one with `accounts create --name NAME`.");
            } else {
                for (depth, account) in accounts::tree(&all) {
                    println!(
                        "{}{} ({}) {}  code {}-…{}",
                        "    ".repeat(depth),
                        safe(&account.name),
                        account.kind.as_str(),
                        safe(&account.id),
                        safe(account.code_public_id.as_deref().unwrap_or("none")),
                        disabled_marker(account),
                    );
                }
            }
        }
        Command::Accounts(AccountsCommand::Show { id, json }) => {
            let Some(account) = store.account(&id).await? else {
                anyhow::bail!("account {id} does not exist: list accounts with `accounts list`");
            };
            if json {
                println!("{:#}", account_json(&account));
            } else {
                print_account(&account);
            }
        }
        Command::Accounts(AccountsCommand::Update {
            id,
            name,
            address,
            contact,
            json,
        }) => {
            let account = accounts::update(
                &store,
                &id,
                name.as_deref(),
                address.as_deref(),
                contact.as_deref(),
                &actor,
            )
            .await?;
            if json {
                println!("{:#}", account_json(&account));
            } else {
                print_account(&account);
            }
        }
        Command::Accounts(AccountsCommand::Disable { id }) => {
            if accounts::set_disabled(&store, &id, true, &actor).await? {
                println!("Account {} disabled, with every account below it: enrollments and renewals are refused, and its recorders are told so at their next heartbeat.", safe(&id));
            } else {
                println!("Account {} was already disabled.", safe(&id));
            }
        }
        Command::Accounts(AccountsCommand::Enable { id }) => {
            if accounts::set_disabled(&store, &id, false, &actor).await? {
                println!("Account {} enabled.", safe(&id));
            } else {
                println!("Account {} was not disabled.", safe(&id));
            }
            if let Some(account) = store.account(&id).await? {
                if let Some(via) = account.disabled_via {
                    println!(
                        "It stays disabled while account {} above it is: enable that one too.",
                        safe(&via)
                    );
                }
            }
        }
        Command::Codes(CodesCommand::Rotate { account, json }) => {
            let key = code_key(&config, &store).await?;
            let code = accounts::rotate_code(&store, &key, &account, &actor).await?;
            if json {
                println!(
                    "{:#}",
                    json!({ "account_id": account, "registration_code": code.to_string() })
                );
            } else {
                println!("New registration code for {account}: {code}");
                println!("The previous code no longer works.");
            }
        }
        Command::Codes(CodesCommand::List { account, json }) => {
            let codes = accounts::list_codes(&store, &account).await?;
            if json {
                let list: Vec<_> = codes.iter().map(|c| code_json(c, now)).collect();
                println!("{:#}", serde_json::Value::Array(list));
            } else if codes.is_empty() {
                println!("No registration codes: add one with `codes create --account {account}`.");
            } else {
                println!(
                    "{:<9}  {:<8}  {:<7}  {:<20}  {:<20}  {:<20}  {:<24}  LABEL",
                    "PUBLIC ID", "STATE", "USES", "EXPIRES", "CREATED", "LAST USED", "BY"
                );
                for c in &codes {
                    let uses = match c.max_uses {
                        Some(max) => format!("{}/{max}", c.uses),
                        None => c.uses.to_string(),
                    };
                    let last_used = match (&c.last_used_at, &c.last_used_recorder) {
                        (Some(at), Some(recorder)) => format!("{} by {}", rfc3339(*at), recorder),
                        (Some(at), None) => rfc3339(*at),
                        _ => "never".into(),
                    };
                    println!(
                        "{:<9}  {:<8}  {:<7}  {:<20}  {:<20}  {:<20}  {:<24}  {}",
                        safe(&c.public_id),
                        code_state(c, now),
                        uses,
                        c.expires_at.map(rfc3339).unwrap_or_else(|| "never".into()),
                        rfc3339(c.created_at),
                        safe(&last_used),
                        safe(if c.created_by.is_empty() {
                            "-"
                        } else {
                            &c.created_by
                        }),
                        safe(&c.label),
                    );
                }
            }
        }
        Command::Codes(CodesCommand::Create {
            account,
            label,
            expires_in_days,
            expires_at,
            max_uses,
            json,
        }) => {
            let expires_at = expires_in_days
                .map(|days| now + i64::from(days) * 86_400)
                .or(expires_at);
            let key = code_key(&config, &store).await?;
            let limits = CodeLimits {
                label: &label,
                expires_at,
                max_uses: max_uses.map(i64::from),
            };
            let code = accounts::create_code(&store, &key, &account, &limits, &actor).await?;
            if json {
                println!(
                    "{:#}",
                    json!({
                        "account_id": account,
                        "public_id": code.public_id(),
                        "registration_code": code.to_string(),
                        "label": label.trim(),
                        "expires_at": expires_at.map(rfc3339),
                        "max_uses": max_uses,
                    })
                );
            } else {
                println!("New registration code for {}: {code}", safe(&account));
                if let Some(at) = expires_at {
                    println!("  expires:   {}", rfc3339(at));
                }
                if let Some(max) = max_uses {
                    println!("  max uses:  {max}");
                }
                println!("The account's other codes keep working.");
            }
        }
        Command::Codes(CodesCommand::Show { public_id, json }) => {
            let key = code_key(&config, &store).await?;
            let (info, code) = accounts::show_code(&store, &key, &public_id, &actor).await?;
            if json {
                let mut value = code_json(&info, now);
                value["registration_code"] = json!(code.to_string());
                println!("{value:#}");
            } else {
                println!("Registration code {}: {code}", safe(&info.public_id));
                println!("  account:   {}", safe(&info.account_id));
                println!("  label:     {}", safe(&info.label));
                println!("  state:     {}", code_state(&info, now));
            }
        }
        Command::Codes(CodesCommand::Disable { public_id }) => {
            if accounts::disable_code(&store, &public_id, &actor).await? {
                println!(
                    "Registration code {} disabled: it no longer enrolls.",
                    safe(&public_id)
                );
            } else {
                println!(
                    "Registration code {} was already disabled.",
                    safe(&public_id)
                );
            }
        }
        Command::Recorders(RecordersCommand::List { account, json }) => {
            if let Some(id) = &account {
                if store.account(id).await?.is_none() {
                    anyhow::bail!(
                        "account {id} does not exist: list accounts with `accounts list`"
                    );
                }
            }
            let recorders = store.recorders(account.as_deref()).await?;
            let disabled = disabled_accounts(&store).await?;
            if json {
                let list: Vec<_> = recorders
                    .iter()
                    .map(|r| recorder_json(r, now, disabled.contains(&r.account_id)))
                    .collect();
                println!("{:#}", serde_json::Value::Array(list));
            } else if recorders.is_empty() {
                println!("No recorders.");
            } else {
                println!(
                    "{:<36}  {:<36}  {:<16}  {:<12}  {:<8}  {:<20}  REPLACES",
                    "ID", "ACCOUNT", "SERIAL", "MODEL", "STATE", "LAST SEEN"
                );
                for r in &recorders {
                    let state = if r.revoked_at.is_some() {
                        "revoked"
                    } else if r.online(now) {
                        "online"
                    } else {
                        "offline"
                    };
                    let account = if disabled.contains(&r.account_id) {
                        format!("{} (disabled)", safe(&r.account_id))
                    } else {
                        safe(&r.account_id).into_owned()
                    };
                    println!(
                        "{:<36}  {:<36}  {:<16}  {:<12}  {:<8}  {:<20}  {}",
                        safe(&r.id),
                        account,
                        safe(&r.serial),
                        safe(&r.model),
                        state,
                        r.last_seen.map(rfc3339).unwrap_or_else(|| "never".into()),
                        safe(r.replaces.as_deref().unwrap_or("-")),
                    );
                }
            }
        }
        Command::Recorders(RecordersCommand::Show { id, json }) => {
            let Some(r) = store.recorder(&id).await? else {
                anyhow::bail!("recorder {id} does not exist: list recorders with `recorders list`");
            };
            let account_disabled = store
                .account(&r.account_id)
                .await?
                .is_some_and(|a| a.effectively_disabled());
            let mut value = recorder_json(&r, now, account_disabled);
            value["key_fingerprint"] = json!(r.key_fingerprint);
            value["status"] = r
                .status
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null);
            if json {
                println!("{value:#}");
            } else {
                let state = if r.revoked_at.is_some() {
                    "revoked".to_string()
                } else if r.online(now) {
                    "online".to_string()
                } else {
                    format!("offline ({})", offline_reason(&r, now).unwrap_or_default())
                };
                println!("Recorder {}", safe(&r.id));
                println!(
                    "  account:        {}{}",
                    safe(&r.account_id),
                    if account_disabled { " (disabled)" } else { "" }
                );
                println!("  serial / model: {} / {}", safe(&r.serial), safe(&r.model));
                println!("  state:          {}", safe(&state));
                println!(
                    "  last seen:      {}",
                    r.last_seen.map(rfc3339).unwrap_or_else(|| "never".into())
                );
                println!(
                    "  agent version:  {}",
                    safe(r.agent_version.as_deref().unwrap_or("-"))
                );
                if let Some(replaces) = &r.replaces {
                    println!("  replaces:       {}", safe(replaces));
                }
                let status = format!("{:#}", value["status"]);
                println!("  status:         {}", safe_json(&status));
            }
        }
        Command::Recorders(RecordersCommand::Revoke { id }) => {
            match store.revoke_recorder(&id, now, &actor).await {
                Ok(true) => println!("Recorder {id} revoked: its next heartbeat will be refused."),
                Ok(false) => println!("Recorder {id} was already revoked."),
                Err(crate::store::StoreError::NotFound { .. }) => {
                    anyhow::bail!(
                        "recorder {id} does not exist: list recorders with `recorders list`"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        Command::Users(UsersCommand::Invite {
            account,
            email,
            name,
            group,
            base_url,
            json,
        }) => {
            let invited =
                users::invite(&store, &account, &email, &name, group.as_deref(), &actor).await?;
            let link = accept_link(&config, base_url.as_deref(), &invited.token);
            print_invitation(&invited, &link, json)?;
        }
        Command::Users(UsersCommand::Resend {
            user,
            base_url,
            json,
        }) => {
            let invited = users::resend(&store, &user, &actor).await?;
            let link = accept_link(&config, base_url.as_deref(), &invited.token);
            print_invitation(&invited, &link, json)?;
        }
        Command::Users(UsersCommand::List { account, json }) => {
            print_users(&store.users(account.as_deref()).await?, json)?;
        }
        Command::Users(UsersCommand::Disable { user }) => {
            let (user, changed) = users::set_disabled(&store, &user, true, &actor).await?;
            if changed {
                println!("Disabled {}.", safe(&user.email));
            } else {
                println!(
                    "{} is {}; nothing changed.",
                    safe(&user.email),
                    user.status.as_str()
                );
            }
        }
        Command::Users(UsersCommand::Enable { user }) => {
            let (user, changed) = users::set_disabled(&store, &user, false, &actor).await?;
            if changed {
                println!("Enabled {}.", safe(&user.email));
            } else {
                println!(
                    "{} is {}; nothing changed.",
                    safe(&user.email),
                    user.status.as_str()
                );
            }
        }
        Command::Groups(GroupsCommand::List { account, json }) => {
            if store.account(&account).await?.is_none() {
                return Err(users::UserError::AccountNotFound(account).into());
            }
            print_groups(&store.groups(&account).await?, json)?;
        }
        Command::Groups(GroupsCommand::Create {
            account,
            name,
            permissions,
            json,
        }) => {
            let set: PermissionSet = permissions.into_iter().collect();
            let group = users::create_group(&store, &account, &name, set, &actor).await?;
            if json {
                println!("{:#}", serde_json::to_value(&group)?);
            } else {
                println!("Created group {} ({}).", safe(&group.name), group.id);
            }
        }
        Command::Audit { limit, json } => {
            let entries = store.audit_log(limit).await?;
            if json {
                println!("{:#}", serde_json::to_value(&entries)?);
            } else {
                for e in entries {
                    println!(
                        "{}  {:<24} {:<22} account={} recorder={} {}",
                        rfc3339(e.at),
                        safe(&e.action),
                        safe(&e.actor),
                        safe(e.account_id.as_deref().unwrap_or("-")),
                        safe(e.recorder_id.as_deref().unwrap_or("-")),
                        audit_detail(&e.detail)
                    );
                }
            }
        }
        Command::Serve(_)
        | Command::Mail(_)
        | Command::ValidateConfig
        | Command::PrintDefaultConfig => {
            unreachable!("handled in run")
        }
    }
    Ok(())
}

/// The audit log's actor for an admin command: `cli:` and the user of the real uid, which
/// the caller cannot choose ($USER and $SUDO_USER it can), or `cli:uid=N` when the uid has
/// no passwd entry (a container, a deleted user).
///
/// For uid 0 only, a set $SUDO_USER is appended (`cli:root (sudo: alice)`) so `sudo` keeps
/// saying who used it: root could write any audit row anyway, so the variable claims no more
/// than root already can, while for any other uid it would let a user name someone else. It
/// is added information, never in place of the uid.
fn cli_actor() -> String {
    let uid = nix::unistd::getuid();
    let user = match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("uid={uid}"),
    };
    let sudo_user = std::env::var("SUDO_USER").unwrap_or_default();
    if uid.is_root() && !sudo_user.is_empty() {
        format!("cli:{user} (sudo: {sudo_user})")
    } else {
        format!("cli:{user}")
    }
}
