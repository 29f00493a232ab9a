//! The ten named permissions a group can hold, and sets of them with subset checks.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One thing a user may do inside their account's subtree. The dotted names are the stable
/// form: they are stored in the database, shown by the CLI and sent over the API.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum Permission {
    #[serde(rename = "accounts.view")]
    AccountsView,
    #[serde(rename = "accounts.manage")]
    AccountsManage,
    #[serde(rename = "users.view")]
    UsersView,
    #[serde(rename = "users.manage")]
    UsersManage,
    #[serde(rename = "groups.manage")]
    GroupsManage,
    #[serde(rename = "codes.view")]
    CodesView,
    #[serde(rename = "codes.manage")]
    CodesManage,
    #[serde(rename = "recorders.view")]
    RecordersView,
    #[serde(rename = "recorders.manage")]
    RecordersManage,
    #[serde(rename = "audit.view")]
    AuditView,
}

impl Permission {
    /// Every permission, in the order they are documented and listed.
    pub const ALL: [Permission; 10] = [
        Permission::AccountsView,
        Permission::AccountsManage,
        Permission::UsersView,
        Permission::UsersManage,
        Permission::GroupsManage,
        Permission::CodesView,
        Permission::CodesManage,
        Permission::RecordersView,
        Permission::RecordersManage,
        Permission::AuditView,
    ];

    /// The permissions an account must keep on at least one active user, so that someone can
    /// still add users and repair groups (see `users.rs`).
    pub const ADMINISTRATION: [Permission; 2] = [Permission::UsersManage, Permission::GroupsManage];

    /// The dotted name, e.g. `users.manage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::AccountsView => "accounts.view",
            Permission::AccountsManage => "accounts.manage",
            Permission::UsersView => "users.view",
            Permission::UsersManage => "users.manage",
            Permission::GroupsManage => "groups.manage",
            Permission::CodesView => "codes.view",
            Permission::CodesManage => "codes.manage",
            Permission::RecordersView => "recorders.view",
            Permission::RecordersManage => "recorders.manage",
            Permission::AuditView => "audit.view",
        }
    }

    /// The valid names joined with ", ", for error messages that say what would be accepted.
    pub fn valid_names() -> String {
        Permission::ALL
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the ten permissions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown permission {name:?}; valid permissions are: {}",
    Permission::valid_names()
)]
pub struct UnknownPermission {
    pub name: String,
}

impl FromStr for Permission {
    type Err = UnknownPermission;

    /// Exact dotted names only (no case folding): these are identifiers, and accepting
    /// variants would make stored and typed forms differ.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission { name: s.to_owned() })
    }
}

/// A set of permissions, ordered so listings and serialized forms are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    /// No permissions.
    pub fn empty() -> Self {
        Self::default()
    }

    /// All ten permissions: what an account's Administrators group holds.
    pub fn all() -> Self {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(&self, permission: Permission) -> bool {
        self.0.contains(&permission)
    }

    /// True when every permission of `self` is also in `other`.
    pub fn is_subset(&self, other: &PermissionSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// True when `self` holds everything needed to administer users and groups.
    pub fn can_administer(&self) -> bool {
        Permission::ADMINISTRATION.iter().all(|p| self.contains(*p))
    }

    pub fn insert(&mut self, permission: Permission) -> bool {
        self.0.insert(permission)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_round_trips_through_its_dotted_name() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Permission>(&json).unwrap(), p);
        }
    }

    #[test]
    fn there_are_exactly_ten_distinct_permissions() {
        let set = PermissionSet::all();
        assert_eq!(set.len(), 10);
        let names: BTreeSet<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), 10);
    }

    #[test]
    fn unknown_permission_error_lists_the_ten_valid_names() {
        let err = "users.delete".parse::<Permission>().unwrap_err();
        let message = err.to_string();
        assert!(message.contains("users.delete"), "{message}");
        for p in Permission::ALL {
            assert!(message.contains(p.as_str()), "{message} lacks {p}");
        }
        assert!("Users.Manage".parse::<Permission>().is_err());
    }

    #[test]
    fn subset_checks_follow_set_inclusion() {
        let view: PermissionSet = [Permission::UsersView].into_iter().collect();
        let admin: PermissionSet = Permission::ADMINISTRATION.into_iter().collect();
        assert!(view.is_subset(&PermissionSet::all()));
        assert!(PermissionSet::empty().is_subset(&view));
        assert!(!admin.is_subset(&view));
        assert!(admin.can_administer());
        assert!(!view.can_administer());
        assert!(PermissionSet::all().can_administer());
    }

    #[test]
    fn permission_set_serializes_as_a_sorted_list_of_names() {
        let set: PermissionSet = [Permission::AuditView, Permission::AccountsView]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["accounts.view","audit.view"]"#
        );
    }
}
