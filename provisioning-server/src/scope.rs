//! The one scope rule every administration request goes through.
//!
//! A user acts on their own account and its descendants only, with the union of their
//! groups' permissions; never on a sibling or an ancestor. Nobody grants a permission they
//! do not hold, nor puts a user into a group holding more than they do.
//!
//! Anything outside a user's subtree answers [`Denied::NotFound`], exactly like an account
//! that does not exist, so a request cannot be used to learn which ids exist elsewhere in
//! the tree. Inside the subtree the user may already see the account, so a missing
//! permission answers [`Denied::Forbidden`] (a 403): hiding it would only confuse them.
//!
//! This module is pure: callers load the accounts, the user and their groups from the
//! store, build an [`AccountTree`] and a [`Principal`], and ask here. Keeping the rule in
//! one place without I/O is what lets it be tested exhaustively (see the property test).

use std::collections::HashMap;

use crate::permissions::{Permission, PermissionSet};
use crate::store::{Account, Group, User, UserStatus};

/// The account hierarchy as parent links, for subtree checks.
///
/// Built from `(id, parent_id)` pairs, normally from `Store::accounts()`. The store keeps
/// the links acyclic, but the checks here never trust that: a cycle or a dangling parent
/// in bad data only ends a walk early, it never loops.
#[derive(Debug, Clone, Default)]
pub struct AccountTree {
    parents: HashMap<String, Option<String>>,
}

impl AccountTree {
    /// Builds the tree from `(id, parent_id)` pairs. A repeated id keeps its last parent.
    pub fn new<I, S>(links: I) -> Self
    where
        I: IntoIterator<Item = (S, Option<S>)>,
        S: Into<String>,
    {
        let parents = links
            .into_iter()
            .map(|(id, parent)| (id.into(), parent.map(Into::into)))
            .collect();
        Self { parents }
    }

    /// Builds the tree from the accounts the store lists.
    pub fn from_accounts(accounts: &[Account]) -> Self {
        Self::new(
            accounts
                .iter()
                .map(|a| (a.id.as_str(), a.parent_id.as_deref())),
        )
    }

    /// True when the account id is known.
    pub fn contains(&self, id: &str) -> bool {
        self.parents.contains_key(id)
    }

    /// True when `candidate` is `root` itself or one of its descendants, both known.
    ///
    /// Walks up from `candidate`; a walk longer than the number of accounts must have gone
    /// round a cycle, so it stops there and answers false (unless `root` was met on the way).
    pub fn is_within(&self, root: &str, candidate: &str) -> bool {
        if !self.contains(root) || !self.contains(candidate) {
            return false;
        }
        let mut current = candidate;
        for _ in 0..=self.parents.len() {
            if current == root {
                return true;
            }
            match self.parents.get(current) {
                Some(Some(parent)) => current = parent,
                // A root of the forest, or a dangling parent id: root was not above.
                _ => return false,
            }
        }
        false
    }
}

/// Who is acting: a user, the account they belong to and what they may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub account_id: String,
    /// The union of the permissions of the user's groups; empty unless `active`.
    pub permissions: PermissionSet,
    /// Only active users act. Invited users have not accepted yet; disabled users are out.
    pub active: bool,
}

impl Principal {
    /// Builds the principal for `user` from their groups' permissions.
    ///
    /// Only groups of the user's own account whose names the user lists count; a disabled
    /// or invited user gets no permissions at all.
    pub fn from_user(user: &User, groups: &[Group]) -> Self {
        let active = user.status == UserStatus::Active;
        let permissions = if active {
            groups
                .iter()
                .filter(|g| g.account_id == user.account_id && user.groups.contains(&g.name))
                .flat_map(|g| g.permissions.iter())
                .collect()
        } else {
            PermissionSet::empty()
        };
        Self {
            user_id: user.id.clone(),
            account_id: user.account_id.clone(),
            permissions,
            active,
        }
    }

    /// The permissions the principal can actually use: none when not active, whatever the
    /// `permissions` field says (it is public, so do not trust how it was filled).
    pub fn effective_permissions(&self) -> PermissionSet {
        if self.active {
            self.permissions.clone()
        } else {
            PermissionSet::empty()
        }
    }

    /// True when the principal is active and holds `permission`.
    pub fn holds(&self, permission: Permission) -> bool {
        self.active && self.permissions.contains(permission)
    }
}

/// Why a request is refused. Callers map these to HTTP statuses and nothing else: the
/// variants carry no detail, so the answer cannot leak what lies outside the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The target is unknown or outside the principal's subtree: answer 404, the same as
    /// for an id that does not exist.
    #[error("not found")]
    NotFound,
    /// The target is inside the principal's subtree but they lack the permission (or try to
    /// grant more than they hold): answer 403.
    #[error("forbidden")]
    Forbidden,
}

/// May `principal` use `needed` on `target_account`?
///
/// Scope is checked first, so an outside or unknown target is [`Denied::NotFound`] whatever
/// the principal holds; only then is a missing permission [`Denied::Forbidden`].
pub fn authorize(
    principal: &Principal,
    tree: &AccountTree,
    target_account: &str,
    needed: Permission,
) -> Result<(), Denied> {
    if !tree.is_within(&principal.account_id, target_account) {
        return Err(Denied::NotFound);
    }
    if !principal.holds(needed) {
        return Err(Denied::Forbidden);
    }
    Ok(())
}

/// May `principal` give `permissions` to a group of `target_account`?
///
/// Needs `groups.manage` on the target, and the set must be a subset of what the principal
/// holds: otherwise anyone managing groups could raise themselves to every permission.
pub fn may_grant(
    principal: &Principal,
    tree: &AccountTree,
    target_account: &str,
    permissions: &PermissionSet,
) -> Result<(), Denied> {
    authorize(principal, tree, target_account, Permission::GroupsManage)?;
    within_own_permissions(principal, permissions)
}

/// May `principal` put a user into a group of `group_account` holding `group_permissions`?
///
/// Needs `users.manage` on the group's account, and the group may hold nothing the
/// principal does not: placing someone in a stronger group is granting by another route.
pub fn may_place_in_group(
    principal: &Principal,
    tree: &AccountTree,
    group_account: &str,
    group_permissions: &PermissionSet,
) -> Result<(), Denied> {
    authorize(principal, tree, group_account, Permission::UsersManage)?;
    within_own_permissions(principal, group_permissions)
}

fn within_own_permissions(
    principal: &Principal,
    permissions: &PermissionSet,
) -> Result<(), Denied> {
    if permissions.is_subset(&principal.effective_permissions()) {
        Ok(())
    } else {
        Err(Denied::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // partner ─┬─ sub ── customer
    //          └─ sibling
    // other (a second, unrelated partner)
    fn tree() -> AccountTree {
        AccountTree::new([
            ("partner", None),
            ("sub", Some("partner")),
            ("customer", Some("sub")),
            ("sibling", Some("partner")),
            ("other", None),
        ])
    }

    fn principal_at(account: &str, permissions: &[Permission]) -> Principal {
        Principal {
            user_id: "u1".into(),
            account_id: account.into(),
            permissions: permissions.iter().copied().collect(),
            active: true,
        }
    }

    fn set(permissions: &[Permission]) -> PermissionSet {
        permissions.iter().copied().collect()
    }

    const VIEW: Permission = Permission::AccountsView;

    #[test]
    fn a_user_acts_on_their_own_account() {
        let p = principal_at("sub", &[VIEW]);
        assert_eq!(authorize(&p, &tree(), "sub", VIEW), Ok(()));
    }

    #[test]
    fn a_user_acts_on_a_child_and_a_grandchild() {
        let p = principal_at("partner", &[VIEW]);
        assert_eq!(authorize(&p, &tree(), "sub", VIEW), Ok(()));
        assert_eq!(authorize(&p, &tree(), "customer", VIEW), Ok(()));
    }

    #[test]
    fn a_sibling_looks_like_it_does_not_exist() {
        let p = principal_at("sub", &Permission::ALL);
        assert_eq!(
            authorize(&p, &tree(), "sibling", VIEW),
            Err(Denied::NotFound)
        );
        assert_eq!(authorize(&p, &tree(), "other", VIEW), Err(Denied::NotFound));
    }

    #[test]
    fn a_parent_or_grandparent_looks_like_it_does_not_exist() {
        let p = principal_at("customer", &Permission::ALL);
        assert_eq!(authorize(&p, &tree(), "sub", VIEW), Err(Denied::NotFound));
        assert_eq!(
            authorize(&p, &tree(), "partner", VIEW),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn an_unknown_target_is_not_found_like_an_outside_one() {
        let p = principal_at("partner", &Permission::ALL);
        assert_eq!(authorize(&p, &tree(), "nope", VIEW), Err(Denied::NotFound));
        assert_eq!(authorize(&p, &tree(), "", VIEW), Err(Denied::NotFound));
    }

    #[test]
    fn a_user_whose_account_is_unknown_reaches_nothing() {
        let p = principal_at("deleted", &Permission::ALL);
        assert_eq!(
            authorize(&p, &tree(), "partner", VIEW),
            Err(Denied::NotFound)
        );
        assert_eq!(
            authorize(&p, &tree(), "deleted", VIEW),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn a_missing_permission_inside_scope_is_forbidden() {
        let p = principal_at("partner", &[Permission::UsersView]);
        assert_eq!(
            authorize(&p, &tree(), "customer", VIEW),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn a_missing_permission_outside_scope_is_still_not_found() {
        let p = principal_at("sub", &[]);
        assert_eq!(
            authorize(&p, &tree(), "sibling", VIEW),
            Err(Denied::NotFound)
        );
    }

    #[test]
    fn an_inactive_principal_holds_nothing_even_if_its_set_says_so() {
        let mut p = principal_at("partner", &Permission::ALL);
        p.active = false;
        assert_eq!(
            authorize(&p, &tree(), "partner", VIEW),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            may_grant(&p, &tree(), "partner", &PermissionSet::empty()),
            Err(Denied::Forbidden)
        );
    }

    fn user(status: UserStatus, groups: &[&str]) -> User {
        User {
            id: "u1".into(),
            account_id: "sub".into(),
            email: "a@example.com".into(),
            name: "A".into(),
            status,
            created_at: 0,
            created_by: "t".into(),
            terms_version: None,
            terms_accepted_at: None,
            age_confirmed_at: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn group(account: &str, name: &str, permissions: &[Permission]) -> Group {
        Group {
            id: format!("{account}/{name}"),
            account_id: account.into(),
            name: name.into(),
            created_at: 0,
            permissions: set(permissions),
            members: 1,
        }
    }

    #[test]
    fn an_active_user_holds_the_union_of_their_own_accounts_groups() {
        let groups = [
            group("sub", "viewers", &[VIEW]),
            group("sub", "codes", &[Permission::CodesManage]),
            group("sub", "audit", &[Permission::AuditView]),
            // Same name in another account: not the user's group.
            group("sibling", "viewers", &[Permission::UsersManage]),
        ];
        let p = Principal::from_user(&user(UserStatus::Active, &["viewers", "codes"]), &groups);
        assert!(p.active);
        assert_eq!(p.account_id, "sub");
        assert_eq!(p.permissions, set(&[VIEW, Permission::CodesManage]));
    }

    #[test]
    fn disabled_and_invited_users_have_no_permissions() {
        let groups = [group("sub", "Administrators", &Permission::ALL)];
        for status in [UserStatus::Disabled, UserStatus::Invited] {
            let p = Principal::from_user(&user(status, &["Administrators"]), &groups);
            assert!(!p.active);
            assert!(p.permissions.is_empty());
            assert_eq!(authorize(&p, &tree(), "sub", VIEW), Err(Denied::Forbidden));
            assert_eq!(
                authorize(&p, &tree(), "sibling", VIEW),
                Err(Denied::NotFound)
            );
        }
    }

    #[test]
    fn granting_needs_groups_manage_and_only_what_one_holds() {
        let p = principal_at("partner", &[Permission::GroupsManage, VIEW]);
        assert_eq!(may_grant(&p, &tree(), "sub", &set(&[VIEW])), Ok(()));
        assert_eq!(
            may_grant(&p, &tree(), "sub", &set(&[Permission::GroupsManage, VIEW])),
            Ok(())
        );
        assert_eq!(
            may_grant(&p, &tree(), "sub", &set(&[Permission::UsersManage])),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            may_grant(&p, &tree(), "other", &set(&[VIEW])),
            Err(Denied::NotFound)
        );
        let viewer = principal_at("partner", &[VIEW]);
        assert_eq!(
            may_grant(&viewer, &tree(), "sub", &PermissionSet::empty()),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn placing_in_a_group_needs_users_manage_and_no_stronger_group() {
        let p = principal_at("sub", &[Permission::UsersManage, VIEW]);
        assert_eq!(
            may_place_in_group(&p, &tree(), "customer", &set(&[VIEW])),
            Ok(())
        );
        assert_eq!(
            may_place_in_group(&p, &tree(), "customer", &PermissionSet::all()),
            Err(Denied::Forbidden)
        );
        assert_eq!(
            may_place_in_group(&p, &tree(), "partner", &set(&[VIEW])),
            Err(Denied::NotFound)
        );
        let granter = principal_at("sub", &[Permission::GroupsManage, VIEW]);
        assert_eq!(
            may_place_in_group(&granter, &tree(), "sub", &set(&[VIEW])),
            Err(Denied::Forbidden)
        );
    }

    #[test]
    fn cycles_and_dangling_parents_end_the_walk() {
        let bad = AccountTree::new([
            ("a", Some("b")),
            ("b", Some("a")),
            ("self", Some("self")),
            ("orphan", Some("gone")),
            ("c", Some("a")),
        ]);
        assert!(bad.is_within("a", "c"));
        assert!(bad.is_within("b", "c"));
        assert!(!bad.is_within("self", "c"));
        assert!(bad.is_within("self", "self"));
        assert!(!bad.is_within("gone", "orphan"));
        assert!(!bad.is_within("c", "a"));
        assert!(!bad.is_within("orphan", "a"));
    }

    #[test]
    fn the_tree_can_be_built_from_store_accounts() {
        let account = |id: &str, parent: Option<&str>| Account {
            id: id.into(),
            name: id.into(),
            kind: crate::store::AccountKind::Partner,
            parent_id: parent.map(Into::into),
            code_public_id: None,
            created_at: 0,
            address: String::new(),
            contact: None,
            disabled_at: None,
            disabled_by: None,
            disabled_via: None,
        };
        let t = AccountTree::from_accounts(&[account("p", None), account("c", Some("p"))]);
        assert!(t.is_within("p", "c"));
        assert!(!t.is_within("c", "p"));
    }

    /// A forest of up to 30 accounts (each parent comes earlier, so it is acyclic), users in
    /// random accounts with random permissions and states, and requests whose target may be
    /// any account or an unknown id.
    #[derive(Debug, Clone)]
    struct World {
        parents: Vec<Option<usize>>,
        users: Vec<(usize, u16, bool)>,
        requests: Vec<(usize, usize, usize, u16)>,
    }

    fn world() -> impl Strategy<Value = World> {
        (1usize..=30)
            .prop_flat_map(|n| {
                let parents = (0..n)
                    .map(|i| {
                        if i == 0 {
                            Just(None).boxed()
                        } else {
                            proptest::option::of(0..i).boxed()
                        }
                    })
                    .collect::<Vec<_>>();
                let users = proptest::collection::vec((0..n, 0u16..1024, any::<bool>()), 1..10);
                (Just(n), parents, users)
            })
            .prop_flat_map(|(n, parents, users)| {
                let u = users.len();
                // Targets n and n + 1 stand for ids that are not in the tree.
                let requests = proptest::collection::vec(
                    (0..u, 0..n + 2, 0..Permission::ALL.len(), 0u16..1024),
                    1..40,
                );
                (Just(parents), Just(users), requests)
            })
            .prop_map(|(parents, users, requests)| World {
                parents,
                users,
                requests,
            })
    }

    fn id(i: usize) -> String {
        format!("acct-{i}")
    }

    fn from_mask(mask: u16) -> PermissionSet {
        Permission::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, p)| p)
            .collect()
    }

    /// The reference answer, straight from the parent indices.
    fn descends(parents: &[Option<usize>], root: usize, mut candidate: usize) -> bool {
        if root >= parents.len() || candidate >= parents.len() {
            return false;
        }
        loop {
            if candidate == root {
                return true;
            }
            match parents[candidate] {
                Some(p) => candidate = p,
                None => return false,
            }
        }
    }

    proptest! {
        #[test]
        fn authorize_allows_exactly_in_subtree_with_permission_when_active(w in world()) {
            let tree = AccountTree::new(
                w.parents.iter().enumerate().map(|(i, p)| (id(i), p.map(id))),
            );
            for &(u, target, perm, grant_mask) in &w.requests {
                let (account, mask, active) = w.users[u];
                let principal = Principal {
                    user_id: format!("user-{u}"),
                    account_id: id(account),
                    permissions: from_mask(mask),
                    active,
                };
                let needed = Permission::ALL[perm];
                let in_scope = descends(&w.parents, account, target);
                let held = active && from_mask(mask).contains(needed);

                let answer = authorize(&principal, &tree, &id(target), needed);
                prop_assert_eq!(answer.is_ok(), in_scope && held);
                if !in_scope {
                    prop_assert_eq!(answer, Err(Denied::NotFound));
                } else if !held {
                    prop_assert_eq!(answer, Err(Denied::Forbidden));
                }

                let granted = from_mask(grant_mask);
                let grant = may_grant(&principal, &tree, &id(target), &granted);
                let subset = granted.is_subset(&principal.effective_permissions());
                prop_assert_eq!(
                    grant.is_ok(),
                    in_scope && principal.holds(Permission::GroupsManage) && subset
                );
                if !in_scope {
                    prop_assert_eq!(grant, Err(Denied::NotFound));
                }
                let place = may_place_in_group(&principal, &tree, &id(target), &granted);
                prop_assert_eq!(
                    place.is_ok(),
                    in_scope && principal.holds(Permission::UsersManage) && subset
                );
                if !in_scope {
                    prop_assert_eq!(place, Err(Denied::NotFound));
                }
            }
        }

        #[test]
        fn is_within_terminates_on_arbitrary_links_including_cycles(
            links in proptest::collection::vec((0usize..12, proptest::option::of(0usize..14)), 0..20),
            root in 0usize..14,
            candidate in 0usize..14,
        ) {
            let tree = AccountTree::new(links.iter().map(|&(i, p)| (id(i), p.map(id))));
            let answer = tree.is_within(&id(root), &id(candidate));
            if !tree.contains(&id(root)) || !tree.contains(&id(candidate)) {
                prop_assert!(!answer);
            }
            if root == candidate {
                prop_assert_eq!(answer, tree.contains(&id(root)));
            }
        }
    }
}
