//! The VRRP state machine of one instance (RFC 5798 section 6.4, with
//! keepalived's timers), as a pure value: time comes in as an argument and
//! what must happen goes out as [`Action`]s, so every rule is unit-tested.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// The priority of the address owner, which is master at once.
pub const OWNER: u8 = 255;
/// Priority 0 in an advert means "I am stopping: take over now".
pub const STOPPING: u8 = 0;

/// RFC 5798 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Backup,
    Master,
    Fault,
}

impl State {
    /// keepalived's spelling, for logs, notify scripts and status.
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

/// Settings that do not change while the instance runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// 2 or 3.
    pub version: u8,
    /// Our advertisement interval.
    pub interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Our address in adverts: the higher address wins a priority tie.
    pub address: Ipv4Addr,
    /// `state: MASTER`: wait one interval plus skew, not three, before
    /// claiming mastership; the election still decides.
    pub start_master: bool,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority.
    Send(u8),
    /// The instance entered this state.
    Enter(State),
    /// As MASTER we heard a lower-priority master: both think they are
    /// master. We answered with an advert.
    SplitBrain { from: Ipv4Addr, priority: u8 },
}

/// One instance's protocol state.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    state: State,
    /// Effective priority (base plus tracking).
    priority: u8,
    /// The master's interval: ours, or learned from its v3 adverts.
    master_interval: Duration,
    /// Advert timer (MASTER) or master-down timer (BACKUP).
    deadline: Option<Instant>,
    /// With `preempt_delay`: when a lower-priority master may be displaced.
    preempt_at: Option<Instant>,
    fault: bool,
    /// The current master's address, when known.
    master: Option<Ipv4Addr>,
}

impl Machine {
    pub fn new(settings: Settings, priority: u8) -> Machine {
        Machine {
            master_interval: settings.interval,
            settings,
            state: State::Init,
            priority,
            deadline: None,
            preempt_at: None,
            fault: false,
            master: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn priority(&self) -> u8 {
        self.priority
    }
    /// When [`Machine::on_timer`] is next due.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
    /// The master's address (ours when MASTER).
    pub fn master(&self) -> Option<Ipv4Addr> {
        self.master
    }
    /// The interval the master advertises at.
    pub fn master_interval(&self) -> Duration {
        self.master_interval
    }

    /// keepalived's skew: v2 (256 − P)/256 s, v3 (256 − P) × interval / 256.
    pub fn skew(&self) -> Duration {
        let p = 256 - self.priority as u32;
        match self.settings.version {
            2 => Duration::from_secs(1) * p / 256,
            _ => self.master_interval * p / 256,
        }
    }

    /// 3 × the master's interval + skew.
    pub fn master_down(&self) -> Duration {
        self.master_interval * 3 + self.skew()
    }

    /// Leaves Init.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        if self.fault {
            return self.enter(State::Fault, None);
        }
        if self.priority == OWNER {
            return self.become_master(now);
        }
        let wait = if self.settings.start_master {
            self.master_interval + self.skew()
        } else {
            self.master_down()
        };
        self.enter(State::Backup, Some(now + wait))
    }

    fn enter(&mut self, s: State, deadline: Option<Instant>) -> Vec<Action> {
        self.deadline = deadline;
        if s == self.state {
            return vec![];
        }
        self.state = s;
        if s != State::Backup {
            self.master = (s == State::Master).then_some(self.settings.address);
        }
        vec![Action::Enter(s)]
    }

    fn become_master(&mut self, now: Instant) -> Vec<Action> {
        let mut a = vec![Action::Send(self.priority)];
        a.extend(self.enter(State::Master, Some(now + self.settings.interval)));
        a
    }

    /// The timer fired (or is late).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match (self.state, self.deadline) {
            (State::Master, Some(d)) if d <= now => {
                self.deadline = Some(now + self.settings.interval);
                vec![Action::Send(self.priority)]
            }
            (State::Backup, Some(d)) if d <= now => self.become_master(now),
            _ => vec![],
        }
    }

    /// A valid advert for our VRID arrived from `from`.
    pub fn on_advert(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        priority: u8,
        interval: Duration,
    ) -> Vec<Action> {
        match self.state {
            State::Backup => {
                if priority == STOPPING {
                    self.deadline = Some(now + self.skew());
                    return vec![];
                }
                let lower = priority < self.priority;
                let delaying = lower && self.settings.preempt && self.delaying(now);
                if !self.settings.preempt || !lower || delaying {
                    if !lower {
                        self.preempt_at = None;
                    }
                    self.learn(interval);
                    self.master = Some(from);
                    self.deadline = Some(now + self.master_down());
                }
                // Otherwise ignore it: our timer runs out and we preempt.
                vec![]
            }
            State::Master => {
                if priority == STOPPING {
                    self.deadline = Some(now + self.settings.interval);
                    return vec![Action::Send(self.priority)];
                }
                let wins = priority > self.priority
                    || (priority == self.priority
                        && u32::from(from) > u32::from(self.settings.address));
                if wins {
                    self.learn(interval);
                    let down = self.master_down();
                    let a = self.enter(State::Backup, Some(now + down));
                    self.master = Some(from);
                    a
                } else if from == self.settings.address {
                    vec![]
                } else {
                    self.deadline = Some(now + self.settings.interval);
                    vec![
                        Action::Send(self.priority),
                        Action::SplitBrain { from, priority },
                    ]
                }
            }
            State::Init | State::Fault => vec![],
        }
    }

    /// Whether a lower-priority master is still tolerated under `preempt_delay`.
    fn delaying(&mut self, now: Instant) -> bool {
        if self.settings.preempt_delay.is_zero() {
            return false;
        }
        let at = *self
            .preempt_at
            .get_or_insert(now + self.settings.preempt_delay);
        now < at
    }

    /// v3 backups adopt the master's interval; v2 intervals must match.
    fn learn(&mut self, interval: Duration) {
        if self.settings.version == 3 && !interval.is_zero() {
            self.master_interval = interval;
        }
    }

    /// The effective priority changed (tracking).
    pub fn set_priority(&mut self, p: u8) {
        self.priority = p;
    }

    /// A weight-0 tracked script failed (true) or recovered (false).
    pub fn set_fault(&mut self, now: Instant, fault: bool) -> Vec<Action> {
        if fault == self.fault {
            return vec![];
        }
        self.fault = fault;
        match (fault, self.state) {
            (true, State::Master) => {
                let mut a = vec![Action::Send(STOPPING)];
                a.extend(self.enter(State::Fault, None));
                a
            }
            (true, State::Backup) => self.enter(State::Fault, None),
            (false, State::Fault) => {
                self.master_interval = self.settings.interval;
                let down = self.master_down();
                self.enter(State::Backup, Some(now + down))
            }
            _ => vec![],
        }
    }

    /// A graceful stop: a MASTER says priority 0 so a backup takes over
    /// after its skew time.
    pub fn stop(&mut self) -> Vec<Action> {
        let mut a = vec![];
        if self.state == State::Master {
            a.push(Action::Send(STOPPING));
        }
        a.extend(self.enter(State::Init, None));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const LOW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const HIGH: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const SEC: Duration = Duration::from_secs(1);

    fn settings(version: u8) -> Settings {
        Settings {
            version,
            interval: SEC,
            preempt: true,
            preempt_delay: Duration::ZERO,
            address: ME,
            start_master: false,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timers_follow_keepalived() {
        let m = Machine::new(settings(2), 150);
        // v2: skew (256 - 150) / 256 s, whatever the interval.
        assert_eq!(m.skew(), SEC * 106 / 256);
        assert_eq!(m.master_down(), SEC * 3 + SEC * 106 / 256);
        let mut s = settings(3);
        s.interval = ms(100);
        let m = Machine::new(s, 150);
        assert_eq!(m.skew(), ms(100) * 106 / 256);
        assert_eq!(m.master_down(), ms(300) + ms(100) * 106 / 256);
    }

    #[test]
    fn backup_claims_mastership_when_the_master_falls_silent() {
        let t = Instant::now();
        let mut m = Machine::new(settings(2), 100);
        assert_eq!(m.start(t), [Action::Enter(State::Backup)]);
        let down = m.master_down();
        assert!(m.on_timer(t + down - ms(1)).is_empty());
        // An advert from the master restarts the wait.
        assert!(m.on_advert(t + ms(500), HIGH, 150, SEC).is_empty());
        assert!(m.on_timer(t + down).is_empty());
        let a = m.on_timer(t + ms(500) + down);
        assert_eq!(a, [Action::Send(100), Action::Enter(State::Master)]);
        assert_eq!(m.master(), Some(ME));
        // Then it advertises every interval.
        let next = m.deadline().unwrap();
        assert_eq!(m.on_timer(next), [Action::Send(100)]);
    }

    #[test]
    fn the_owner_is_master_at_once() {
        let t = Instant::now();
        let mut m = Machine::new(settings(3), OWNER);
        assert_eq!(
            m.start(t),
            [Action::Send(255), Action::Enter(State::Master)]
        );
    }

    #[test]
    fn initial_master_waits_one_interval_plus_skew() {
        let t = Instant::now();
        let mut s = settings(3);
        s.start_master = true;
        let mut m = Machine::new(s, 200);
        m.start(t);
        assert_eq!(m.deadline(), Some(t + SEC + SEC * 56 / 256));
    }

    #[test]
    fn priority_zero_hands_over_after_the_skew() {
        let t = Instant::now();
        let mut m = Machine::new(settings(2), 100);
        m.start(t);
        m.on_advert(t, HIGH, 150, SEC);
        assert!(m.on_advert(t + ms(10), HIGH, STOPPING, SEC).is_empty());
        assert_eq!(m.deadline(), Some(t + ms(10) + m.skew()));
    }

    #[test]
    fn master_yields_to_higher_priority_and_to_the_higher_address_on_a_tie() {
        let t = Instant::now();
        let mut m = Machine::new(settings(2), OWNER - 1);
        m.set_priority(150);
        m.start(t);
        m.on_timer(t + m.master_down());
        assert_eq!(m.state(), State::Master);
        let now = t + SEC * 5;
        // Lower address, same priority: we keep it and answer (split brain).
        assert_eq!(
            m.on_advert(now, LOW, 150, SEC),
            [
                Action::Send(150),
                Action::SplitBrain {
                    from: LOW,
                    priority: 150
                }
            ]
        );
        // Higher address, same priority: it wins.
        assert_eq!(
            m.on_advert(now, HIGH, 150, SEC),
            [Action::Enter(State::Backup)]
        );
        assert_eq!(m.master(), Some(HIGH));
        assert_eq!(m.deadline(), Some(now + m.master_down()));
    }

    #[test]
    fn master_answers_priority_zero_at_once() {
        let t = Instant::now();
        let mut m = Machine::new(settings(3), OWNER);
        m.start(t);
        assert_eq!(
            m.on_advert(t + ms(1), LOW, STOPPING, SEC),
            [Action::Send(255)]
        );
    }

    #[test]
    fn preempt_nopreempt_and_preempt_delay() {
        let t = Instant::now();
        // preempt: a lower master's adverts are ignored, so we take over.
        let mut m = Machine::new(settings(2), 200);
        m.start(t);
        m.on_advert(t + ms(100), LOW, 100, SEC);
        assert_eq!(m.deadline(), Some(t + m.master_down()));
        // nopreempt: a lower master keeps us waiting.
        let mut s = settings(2);
        s.preempt = false;
        let mut m = Machine::new(s, 200);
        m.start(t);
        m.on_advert(t + ms(100), LOW, 100, SEC);
        assert_eq!(m.deadline(), Some(t + ms(100) + m.master_down()));
        // preempt_delay: tolerated for the delay, then ignored.
        let mut s = settings(2);
        s.preempt_delay = SEC * 10;
        let mut m = Machine::new(s, 200);
        m.start(t);
        m.on_advert(t + SEC, LOW, 100, SEC);
        assert_eq!(m.deadline(), Some(t + SEC + m.master_down()));
        m.on_advert(t + SEC * 10, LOW, 100, SEC);
        assert_eq!(m.deadline(), Some(t + SEC * 10 + m.master_down()));
        m.on_advert(t + SEC * 11, LOW, 100, SEC);
        assert_eq!(
            m.deadline(),
            Some(t + SEC * 10 + m.master_down()),
            "after the delay the lower master is ignored"
        );
    }

    #[test]
    fn v3_backup_learns_the_master_interval_v2_does_not() {
        let t = Instant::now();
        let mut m = Machine::new(settings(3), 100);
        m.start(t);
        m.on_advert(t, HIGH, 150, ms(200));
        assert_eq!(m.master_interval(), ms(200));
        assert_eq!(m.master_down(), ms(600) + ms(200) * 156 / 256);
        let mut m = Machine::new(settings(2), 100);
        m.start(t);
        m.on_advert(t, HIGH, 150, SEC * 2);
        assert_eq!(m.master_interval(), SEC);
    }

    #[test]
    fn fault_leaves_mastership_with_priority_zero_and_recovers_to_backup() {
        let t = Instant::now();
        let mut m = Machine::new(settings(2), OWNER);
        m.start(t);
        assert_eq!(
            m.set_fault(t, true),
            [Action::Send(STOPPING), Action::Enter(State::Fault)]
        );
        assert!(m.on_advert(t, HIGH, 100, SEC).is_empty());
        assert_eq!(m.on_timer(t + SEC * 10), []);
        assert_eq!(m.set_fault(t, false), [Action::Enter(State::Backup)]);
        // Faulty from the start: no mastership.
        let mut m = Machine::new(settings(2), 100);
        m.set_fault(t, true);
        assert_eq!(m.start(t), [Action::Enter(State::Fault)]);
    }

    #[test]
    fn graceful_stop_sends_priority_zero_only_as_master() {
        let t = Instant::now();
        let mut m = Machine::new(settings(2), OWNER);
        m.start(t);
        assert_eq!(
            m.stop(),
            [Action::Send(STOPPING), Action::Enter(State::Init)]
        );
        let mut m = Machine::new(settings(2), 100);
        m.start(t);
        assert_eq!(m.stop(), [Action::Enter(State::Init)]);
    }
}
