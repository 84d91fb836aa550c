//! PIN codes Keygate chooses, for systems whose capability says Keygate generates them: within
//! the system's length rules, honouring a requested code when the system allows one, and never a
//! code already active on one of the same doors.

use std::collections::HashSet;

use time::OffsetDateTime;

use crate::capability::PinCodeRules;
use crate::grant::Notice;

/// Attempts before giving up on a free random code (only reachable when a door's code space is
/// nearly exhausted).
const MAX_TRIES: usize = 1000;

/// Chooses a code. `digit` returns a random digit 0..=9. Returns the code and a warning when the
/// requested code could not be used; `None` when no free code exists.
pub fn choose(
    rules: &PinCodeRules,
    requested: Option<&str>,
    taken: &HashSet<String>,
    mut digit: impl FnMut() -> u8,
    now: OffsetDateTime,
) -> Option<(String, Option<Notice>)> {
    let mut warning = None;
    if let Some(code) = requested {
        let len_ok =
            (usize::from(rules.min_length)..=usize::from(rules.max_length)).contains(&code.len());
        if rules.can_request_code && len_ok && !taken.contains(code) {
            return Some((code.to_owned(), None));
        }
        let why = if !rules.can_request_code {
            "this access system does not accept requested codes"
        } else if !len_ok {
            "the requested code does not fit this access system's length rules"
        } else {
            "the requested code is already in use on one of these entrances"
        };
        warning = Some(Notice::new(
            "requested_code_unavailable",
            format!("{why}; another code was chosen"),
            now,
        ));
    }
    // Prefer the longest allowed length up to 6 digits: easy to type, hard to guess.
    let len = usize::from(rules.max_length.min(6).max(rules.min_length).max(4));
    for _ in 0..MAX_TRIES {
        let code: String = (0..len).map(|_| char::from(b'0' + digit() % 10)).collect();
        if !taken.contains(&code) {
            return Some((code, warning));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::PinCodeGenerator;

    fn rules(can_request: bool) -> PinCodeRules {
        PinCodeRules {
            generator: PinCodeGenerator::Keygate,
            min_length: 4,
            max_length: 8,
            can_request_code: can_request,
            is_code_per_entrance: false,
        }
    }

    fn counter() -> impl FnMut() -> u8 {
        let mut n = 0u8;
        move || {
            n = n.wrapping_add(1);
            n % 10
        }
    }

    #[test]
    fn a_free_requested_code_is_used() {
        let (c, w) = choose(
            &rules(true),
            Some("4321"),
            &HashSet::new(),
            counter(),
            crate::model::now(),
        )
        .expect("code");
        assert_eq!(c, "4321");
        assert!(w.is_none());
    }

    #[test]
    fn a_taken_or_refused_request_gets_another_code_and_a_warning() {
        let taken: HashSet<String> = ["4321".to_owned()].into();
        let (c, w) = choose(
            &rules(true),
            Some("4321"),
            &taken,
            counter(),
            crate::model::now(),
        )
        .expect("code");
        assert_ne!(c, "4321");
        assert_eq!(w.map(|w| w.code), Some("requested_code_unavailable".into()));
        let (_, w) = choose(
            &rules(false),
            Some("9999"),
            &HashSet::new(),
            counter(),
            crate::model::now(),
        )
        .expect("code");
        assert!(w.is_some());
        let (_, w) = choose(
            &rules(true),
            Some("12"),
            &HashSet::new(),
            counter(),
            crate::model::now(),
        )
        .expect("code");
        assert!(w.is_some(), "too short");
    }

    #[test]
    fn generated_codes_avoid_taken_ones_and_fit_the_rules() {
        let taken: HashSet<String> = ["123456".to_owned()].into();
        let (c, _) =
            choose(&rules(true), None, &taken, counter(), crate::model::now()).expect("code");
        assert_eq!(c.len(), 6);
        assert!(!taken.contains(&c));
        // A code space with every code taken yields nothing rather than a duplicate.
        let tiny = PinCodeRules {
            min_length: 4,
            max_length: 4,
            ..rules(false)
        };
        let all: HashSet<String> = (0..10_000).map(|i| format!("{i:04}")).collect();
        assert!(choose(&tiny, None, &all, counter(), crate::model::now()).is_none());
    }
}
