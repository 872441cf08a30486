//! How much work an agent claims: the rule shared by the server's
//! in-process agent and `ganger agent`.

/// What a claim asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Tasks at most.
    pub max: u32,
    /// The agent's slots are all busy: what it gets waits there for one to
    /// free. The server serves such claims after those of agents with free
    /// slots, so claiming ahead never keeps work from an idle agent.
    pub ahead: bool,
}

impl Want {
    /// The next claim of an agent with `slots`, `running` tasks and
    /// `queued` ones claimed ahead; `None` when it holds all it may.
    ///
    /// Free slots are claimed for first. With every slot busy the agent
    /// claims up to one task ahead per slot, so that when a task ends the
    /// next starts at once instead of waiting for a claim's round trip.
    pub fn next(slots: usize, running: usize, queued: usize) -> Option<Want> {
        let held = running + queued;
        let (max, ahead) = if held < slots {
            (slots - held, false)
        } else if held < 2 * slots {
            (2 * slots - held, true)
        } else {
            return None;
        };
        Some(Want {
            max: u32::try_from(max).unwrap_or(u32::MAX),
            ahead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(max: u32, ahead: bool) -> Option<Want> {
        Some(Want { max, ahead })
    }

    #[test]
    fn free_slots_first_then_one_ahead_per_slot() {
        assert_eq!(Want::next(2, 0, 0), want(2, false));
        assert_eq!(Want::next(2, 1, 0), want(1, false));
        assert_eq!(Want::next(2, 2, 0), want(2, true));
        assert_eq!(Want::next(2, 2, 1), want(1, true));
        assert_eq!(Want::next(2, 2, 2), None);
        // Queued tasks fill free slots first: they start at once.
        assert_eq!(Want::next(2, 0, 1), want(1, false));
        assert_eq!(Want::next(1, 1, 1), None);
    }
}
