//! The state machine of a saga type: statuses, allowed transitions, terminal statuses.

use super::SagaError;

/// A saga type's state machine: its statuses, the transitions between them and the terminal
/// statuses. Declare it as a `static`; [`SagaStore::new`](super::SagaStore::new) validates it.
///
/// A step may always "touch" a non-terminal saga (transition to its own status): that
/// bumps the version, so concurrent steps on the same saga are serialized even when they
/// do not change its status.
///
/// ```
/// use prost_db::saga::SagaMachine;
///
/// static MACHINE: SagaMachine = SagaMachine {
///     saga_type: "order",
///     initial: "reserving",
///     transitions: &[("reserving", "confirmed"), ("reserving", "cancelled")],
///     terminal: &["confirmed", "cancelled"],
/// };
/// assert!(MACHINE.allows("reserving", "confirmed"));
/// assert!(MACHINE.allows("reserving", "reserving"));
/// assert!(!MACHINE.allows("confirmed", "cancelled"));
/// assert!(MACHINE.is_terminal("cancelled"));
/// MACHINE.validate().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaMachine {
    /// The value of the `saga_type` column; one table may hold several saga types.
    pub saga_type: &'static str,
    /// The status of a new saga.
    pub initial: &'static str,
    /// The allowed `(from, to)` transitions.
    pub transitions: &'static [(&'static str, &'static str)],
    /// Statuses a saga never leaves.
    pub terminal: &'static [&'static str],
}

impl SagaMachine {
    /// Whether `status` is terminal.
    ///
    /// ```
    /// # use prost_db::saga::SagaMachine;
    /// let m = SagaMachine { saga_type: "t", initial: "a", transitions: &[("a", "b")], terminal: &["b"] };
    /// assert!(m.is_terminal("b") && !m.is_terminal("a"));
    /// ```
    pub fn is_terminal(&self, status: &str) -> bool {
        self.terminal.contains(&status)
    }

    /// Whether the machine knows `status`.
    ///
    /// ```
    /// # use prost_db::saga::SagaMachine;
    /// let m = SagaMachine { saga_type: "t", initial: "a", transitions: &[("a", "b")], terminal: &["b"] };
    /// assert!(m.knows("a") && !m.knows("z"));
    /// ```
    pub fn knows(&self, status: &str) -> bool {
        self.statuses().contains(&status)
    }

    /// Every status, in order of first mention (initial, transitions, terminal).
    ///
    /// ```
    /// # use prost_db::saga::SagaMachine;
    /// let m = SagaMachine { saga_type: "t", initial: "a", transitions: &[("a", "b")], terminal: &["b"] };
    /// assert_eq!(m.statuses(), ["a", "b"]);
    /// ```
    pub fn statuses(&self) -> Vec<&'static str> {
        let mut all = vec![self.initial];
        for &(from, to) in self.transitions {
            all.extend([from, to]);
        }
        all.extend(self.terminal);
        let mut seen = Vec::with_capacity(all.len());
        for status in all {
            if !seen.contains(&status) {
                seen.push(status);
            }
        }
        seen
    }

    /// Whether a saga in `from` may move to `to`: a listed transition, or a touch
    /// (`from == to`) of a known non-terminal status.
    ///
    /// ```
    /// # use prost_db::saga::SagaMachine;
    /// let m = SagaMachine { saga_type: "t", initial: "a", transitions: &[("a", "b")], terminal: &["b"] };
    /// assert!(m.allows("a", "b") && m.allows("a", "a") && !m.allows("b", "b"));
    /// ```
    pub fn allows(&self, from: &str, to: &str) -> bool {
        if from == to {
            return self.knows(from) && !self.is_terminal(from);
        }
        self.transitions.contains(&(from, to))
    }

    /// Checks that the machine can always finish: the initial status is not terminal, no
    /// transition leaves a terminal status, and from every status some terminal status can
    /// be reached.
    ///
    /// # Errors
    ///
    /// [`SagaError::InvalidMachine`] saying what is wrong.
    ///
    /// ```
    /// use prost_db::saga::SagaMachine;
    ///
    /// // "waiting" can never finish.
    /// let stuck = SagaMachine {
    ///     saga_type: "t",
    ///     initial: "start",
    ///     transitions: &[("start", "done"), ("start", "waiting")],
    ///     terminal: &["done"],
    /// };
    /// let error = stuck.validate().unwrap_err();
    /// assert!(error.to_string().contains("\"waiting\""), "{error}");
    /// ```
    pub fn validate(&self) -> Result<(), SagaError> {
        let invalid = |reason: String| SagaError::InvalidMachine {
            saga_type: self.saga_type.to_owned(),
            reason,
        };
        if self.terminal.is_empty() {
            return Err(invalid("it has no terminal status".to_owned()));
        }
        if self.is_terminal(self.initial) {
            return Err(invalid(format!(
                "its initial status {:?} is terminal",
                self.initial
            )));
        }
        if let Some((from, to)) = self.transitions.iter().find(|(f, _)| self.is_terminal(f)) {
            return Err(invalid(format!(
                "the transition {from:?} -> {to:?} leaves a terminal status"
            )));
        }
        let mut finishing: Vec<&str> = self.terminal.to_vec();
        loop {
            let before = finishing.len();
            for &(from, to) in self.transitions {
                if finishing.contains(&to) && !finishing.contains(&from) {
                    finishing.push(from);
                }
            }
            if finishing.len() == before {
                break;
            }
        }
        let stuck: Vec<&str> = self
            .statuses()
            .into_iter()
            .filter(|s| !finishing.contains(s))
            .collect();
        if !stuck.is_empty() {
            return Err(invalid(format!(
                "no terminal status can be reached from {stuck:?}; a saga there would never finish"
            )));
        }
        Ok(())
    }
}
