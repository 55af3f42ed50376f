//! Report-only ("shadow") mode as a decision: whether a route's refusals are enforced or only
//! reported, and when the upstream must be told that a forwarded request would have been
//! refused. Which refusals may be reported at all is the error's business
//! (`ApiError::reportable`): hygiene is enforced in every mode.

/// What a request's policy refusals do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcement {
    /// Refused: the standard error answer (the default).
    #[default]
    Enforce,
    /// Counted, logged and forwarded anyway (`enforce: false`).
    Report,
}

impl Enforcement {
    /// `enforce: true|false` as written.
    pub fn from_flag(enforce: bool) -> Enforcement {
        if enforce {
            Enforcement::Enforce
        } else {
            Enforcement::Report
        }
    }

    /// The narrower setting when it has one, else the wider: a route's over its listener's,
    /// the check listeners' `authz.enforce` over the top-level `enforce`.
    pub fn resolve(wider: Enforcement, narrower: Option<Enforcement>) -> Enforcement {
        narrower.unwrap_or(wider)
    }

    pub fn reports(self) -> bool {
        self == Enforcement::Report
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Report => "report",
        }
    }
}

/// Whether a request forwarded despite a would-be refusal carries `X-Keygate-Would-Refuse`:
/// always on a route with a clinic rule (an upstream that relies on keygate for clinic
/// filtering must never receive a foreign clinic's request unannounced), elsewhere when the
/// config asks for it (`would_refuse_header`).
pub fn tell_upstream(would_refuse: bool, header_configured: bool, clinic_rule: bool) -> bool {
    would_refuse && (header_configured || clinic_rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_setting_overrides_the_listener_and_none_inherits_it() {
        use Enforcement::{Enforce, Report};
        assert_eq!(Enforcement::resolve(Enforce, None), Enforce);
        assert_eq!(Enforcement::resolve(Report, None), Report);
        assert_eq!(Enforcement::resolve(Report, Some(Enforce)), Enforce, "a route can stay enforced in shadow");
        assert_eq!(Enforcement::resolve(Enforce, Some(Report)), Report, "one route can be shadowed alone");
    }

    #[test]
    fn enforcing_is_the_default_and_false_means_report() {
        assert_eq!(Enforcement::default(), Enforcement::Enforce);
        assert_eq!(Enforcement::from_flag(false), Enforcement::Report);
        assert!(Enforcement::from_flag(false).reports() && !Enforcement::from_flag(true).reports());
    }

    #[test]
    fn a_clinic_route_always_tells_the_upstream_others_only_when_configured() {
        assert!(tell_upstream(true, false, true), "clinic rule: always");
        assert!(!tell_upstream(true, false, false), "no clinic rule, header off");
        assert!(tell_upstream(true, true, false), "header on");
        assert!(!tell_upstream(false, true, true), "nothing to report, nothing said");
    }
}
