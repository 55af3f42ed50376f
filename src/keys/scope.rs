//! Scopes (`resource:action`, `resource:*`, `*`) and the key-type presets built from them.

use std::fmt;

/// The read scopes the product documents; a key created without scopes gets all of them.
pub const READ_SCOPES: [&str; 4] = ["interactions:read", "metrics:read", "campaigns:read", "clinics:read"];

/// The write scopes matching [`READ_SCOPES`].
pub const WRITE_SCOPES: [&str; 4] = ["interactions:write", "metrics:write", "campaigns:write", "clinics:write"];

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    /// Accepts `*`, `resource:*` and `resource:action` with lowercase `[a-z0-9_-]` parts.
    pub fn parse(s: &str) -> Result<Scope, String> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        let ok = s == "*"
            || match s.split_once(':') {
                Some((res, act)) => valid_part(res) && (act == "*" || valid_part(act)),
                None => false,
            };
        if ok {
            Ok(Scope(s.to_string()))
        } else {
            Err(format!("invalid scope {s:?}: expected resource:action (e.g. interactions:read), resource:* or *"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does holding `self` grant `required` (always a concrete `resource:action`)?
    pub fn grants(&self, required: &str) -> bool {
        let held = self.0.as_str();
        if held == "*" || held == required {
            return true;
        }
        match (held.strip_suffix(":*"), required.split_once(':')) {
            (Some(res), Some((req_res, _))) => res == req_res,
            _ => false,
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key types from the product documents, as presets over scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    ReadOnly,
    Write,
    Full,
}

impl KeyType {
    pub fn scopes(self) -> Vec<Scope> {
        let names: Vec<&str> = match self {
            KeyType::ReadOnly => READ_SCOPES.to_vec(),
            KeyType::Write => READ_SCOPES.iter().chain(WRITE_SCOPES.iter()).copied().collect(),
            KeyType::Full => vec!["*"],
        };
        names.into_iter().map(|s| Scope(s.to_string())).collect()
    }
}

#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    pub fn new(scopes: Vec<Scope>) -> ScopeSet {
        let mut out: Vec<Scope> = Vec::with_capacity(scopes.len());
        for s in scopes {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        ScopeSet(out)
    }

    pub fn default_read() -> ScopeSet {
        KeyType::ReadOnly.scopes().into_iter().collect::<Vec<_>>().into()
    }

    pub fn grants(&self, required: &str) -> bool {
        self.0.iter().any(|s| s.grants(required))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `X-Scopes` value: space-separated, in table order (as OAuth's `scope`).
    pub fn header_value(&self) -> String {
        let parts: Vec<&str> = self.0.iter().map(Scope::as_str).collect();
        parts.join(" ")
    }
}

impl From<Vec<Scope>> for ScopeSet {
    fn from(v: Vec<Scope>) -> Self {
        ScopeSet::new(v)
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

/// Which scopes a key may hold: the product's read/write scopes, their `resource:*`
/// wildcards, `*`, and whatever the configured routes require. A scope outside it is a typo
/// (`invoices:raed`) that would leave the key unable to reach what it was meant for, so tables
/// holding one are refused. `unchecked` is for a caller that does not know the routes (the key
/// CLI given only `--table`): any well-formed scope passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    /// Sorted; `None` when unchecked.
    known: Option<Vec<String>>,
}

impl Catalogue {
    pub fn new(extra: impl IntoIterator<Item = String>) -> Catalogue {
        let mut known: Vec<String> = READ_SCOPES.iter().chain(WRITE_SCOPES.iter()).map(|s| s.to_string()).collect();
        known.extend(extra);
        let resources: Vec<String> =
            known.iter().filter_map(|s| s.split_once(':').map(|(r, _)| format!("{r}:*"))).collect();
        known.extend(resources);
        known.push("*".into());
        known.sort();
        known.dedup();
        Catalogue { known: Some(known) }
    }

    pub fn unchecked() -> Catalogue {
        Catalogue { known: None }
    }

    /// Every scope either knows. A config reload widens the catalogue this way and never
    /// narrows it, so a key table that loaded keeps loading after a route is removed.
    pub fn union(&self, other: &Catalogue) -> Catalogue {
        match (&self.known, &other.known) {
            (Some(a), Some(b)) => {
                let mut known: Vec<String> = a.iter().chain(b).cloned().collect();
                known.sort();
                known.dedup();
                Catalogue { known: Some(known) }
            }
            _ => Catalogue::unchecked(),
        }
    }

    /// Is `scope` one a key may hold?
    pub fn knows(&self, scope: &str) -> bool {
        self.known.as_ref().is_none_or(|k| k.binary_search_by(|s| s.as_str().cmp(scope)).is_ok())
    }

    /// The known scopes, comma-separated, for error messages.
    pub fn describe(&self) -> String {
        self.known.as_ref().map_or_else(|| "any".to_string(), |k| k.join(", "))
    }

    /// The refusal for an unknown scope, naming the nearest known one when it is a likely typo.
    pub fn unknown(&self, scope: &str) -> String {
        let near = self.known.iter().flatten().map(|k| (strsim::levenshtein(k, scope), k)).min();
        match near {
            Some((d, k)) if d <= 3 => format!("unknown scope {scope:?} (did you mean {k:?}?)"),
            _ => format!("unknown scope {scope:?} (known: {})", self.describe()),
        }
    }
}

impl Default for Catalogue {
    fn default() -> Self {
        Catalogue::new([])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &[&str]) -> ScopeSet {
        ScopeSet::new(s.iter().map(|s| Scope::parse(s).unwrap()).collect())
    }

    #[test]
    fn exact_scope_grants_only_itself() {
        let s = set(&["interactions:read"]);
        assert!(s.grants("interactions:read"));
        assert!(!s.grants("interactions:write"));
        assert!(!s.grants("metrics:read"));
    }

    #[test]
    fn resource_wildcard_grants_every_action_of_that_resource() {
        let s = set(&["interactions:*"]);
        assert!(s.grants("interactions:read"));
        assert!(s.grants("interactions:write"));
        assert!(!s.grants("metrics:read"));
    }

    #[test]
    fn star_grants_everything() {
        assert!(set(&["*"]).grants("campaigns:write"));
    }

    #[test]
    fn prefix_of_a_resource_is_not_the_resource() {
        // `interaction:*` must not grant `interactions:read`.
        assert!(!set(&["interaction:*"]).grants("interactions:read"));
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in ["", "interactions", "Interactions:read", ":read", "a:", "a:b:c", "a b:read", "**"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn presets() {
        assert_eq!(ScopeSet::default_read().header_value(), READ_SCOPES.join(" "));
        assert!(ScopeSet::from(KeyType::Write.scopes()).grants("clinics:write"));
        assert!(!ScopeSet::from(KeyType::ReadOnly.scopes()).grants("clinics:write"));
        assert!(ScopeSet::from(KeyType::Full.scopes()).grants("anything:write"));
    }

    #[test]
    fn the_catalogue_knows_product_route_and_wildcard_scopes_only() {
        let c = Catalogue::new(["reports:export".to_string()]);
        for ok in ["interactions:read", "clinics:write", "reports:export", "reports:*", "interactions:*", "*"] {
            assert!(c.knows(ok), "{ok}");
        }
        for bad in ["invoices:raed", "reports:read", "interactions:delete"] {
            assert!(!c.knows(bad), "{bad}");
        }
        assert!(Catalogue::unchecked().knows("invoices:raed"));
    }

    #[test]
    fn a_union_knows_what_either_knew() {
        let (a, b) = (Catalogue::new(["reports:export".to_string()]), Catalogue::new(["audits:read".to_string()]));
        let both = a.union(&b);
        assert!(both.knows("reports:export") && both.knows("audits:read") && both.knows("audits:*"));
        assert!(!both.knows("reports:read"));
        assert_eq!(both.union(&a), both, "nothing new: the same catalogue");
        assert!(a.union(&Catalogue::unchecked()).knows("anything:at_all"));
    }

    #[test]
    fn an_unknown_scope_names_the_nearest_known_one() {
        let c = Catalogue::default();
        assert_eq!(
            c.unknown("interactions:raed"),
            r#"unknown scope "interactions:raed" (did you mean "interactions:read"?)"#
        );
        assert!(c.unknown("invoices:raed").contains("known: *, campaigns:*"), "{}", c.unknown("invoices:raed"));
    }

    #[test]
    fn duplicates_are_dropped_in_order() {
        assert_eq!(set(&["a:read", "b:read", "a:read"]).header_value(), "a:read b:read");
    }
}
