//! Server selection: a pure function of a state snapshot and the core's own balancing
//! state. Health and admin states are inputs; nothing here blocks or locks.

/// A server's administrative/health state as the cores see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Up,
    Down,
    Maint,
    Drain,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Up => "UP",
            ServerState::Down => "DOWN",
            ServerState::Maint => "MAINT",
            ServerState::Drain => "DRAIN",
        }
    }
}

/// What selection needs to know of one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub state: ServerState,
    pub weight: u32,
    pub backup: bool,
    /// Requests this core has in flight on it (for leastconn).
    pub active: u32,
    /// Excluded for this request (already tried, or failed recently).
    pub excluded: bool,
    /// At its maxconn: up, but cannot take a request now (it waits in the queue).
    pub full: bool,
}

impl Candidate {
    /// In the running for new clients (full or not).
    fn usable(&self) -> bool {
        self.state == ServerState::Up && self.weight > 0 && !self.excluded
    }

    fn eligible(&self) -> bool {
        self.usable() && !self.full
    }
}

/// Per-core smooth weighted round-robin state for one backend (nginx's algorithm).
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    current: Vec<i64>,
    last: usize,
}

impl RoundRobin {
    pub fn new(n: usize) -> Self {
        RoundRobin {
            current: vec![0; n],
            last: 0,
        }
    }
}

/// The set that may take new clients: non-backup servers, or the backups when no
/// non-backup server is usable. A primary that is only full keeps the backups out: the
/// request waits for it (HAProxy's rule).
fn pool(servers: &[Candidate]) -> Option<bool> {
    if servers.iter().any(|s| !s.backup && s.usable()) {
        Some(false)
    } else if servers.iter().any(|s| s.backup && s.usable()) {
        Some(true)
    } else {
        None
    }
}

/// Smooth weighted round-robin: each pick adds every eligible server's weight to its
/// current value and takes the largest, which then loses the total.
pub fn pick_roundrobin(servers: &[Candidate], rr: &mut RoundRobin) -> Option<usize> {
    if rr.current.len() != servers.len() {
        *rr = RoundRobin::new(servers.len());
    }
    let backup = pool(servers)?;
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for (i, s) in servers.iter().enumerate() {
        if s.backup != backup || !s.eligible() {
            continue;
        }
        let w = s.weight as i64;
        rr.current[i] += w;
        total += w;
        match best {
            Some(b) if rr.current[b] >= rr.current[i] => {}
            _ => best = Some(i),
        }
    }
    let b = best?;
    rr.current[b] -= total;
    rr.last = b;
    Some(b)
}

/// Least connections, weighted: the smallest active/weight; ties go round the ring.
pub fn pick_leastconn(servers: &[Candidate], rr: &mut RoundRobin) -> Option<usize> {
    let backup = pool(servers)?;
    let n = servers.len();
    let mut best: Option<(usize, u64)> = None;
    for k in 1..=n {
        let i = (rr.last + k) % n;
        let s = &servers[i];
        if s.backup != backup || !s.eligible() {
            continue;
        }
        // Compare active/weight in fixed point: 2^32 is plenty for weights up to 256,000
        // (256 in thousandths, see crate::live).
        let load = ((s.active as u64 + 1) << 32) / s.weight as u64;
        match best {
            Some((_, l)) if l <= load => {}
            _ => best = Some((i, load)),
        }
    }
    let (b, _) = best?;
    rr.last = b;
    Some(b)
}

/// Whether a server named by a persistence cookie may take the request: UP or DRAIN
/// (DRAIN keeps its sticky clients), and not excluded.
pub fn sticky_ok(s: &Candidate) -> bool {
    matches!(s.state, ServerState::Up | ServerState::Drain) && !s.excluded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(weight: u32) -> Candidate {
        Candidate {
            state: ServerState::Up,
            weight,
            backup: false,
            active: 0,
            excluded: false,
            full: false,
        }
    }

    #[test]
    fn full_primaries_keep_the_backup_out() {
        let mut s = [
            Candidate {
                full: true,
                ..up(1)
            },
            Candidate {
                full: true,
                ..up(1)
            },
            Candidate {
                backup: true,
                ..up(1)
            },
        ];
        let mut rr = RoundRobin::new(3);
        assert_eq!(pick_roundrobin(&s, &mut rr), None, "wait for a primary");
        assert_eq!(pick_leastconn(&s, &mut rr), None, "wait for a primary");
        s[1].full = false;
        assert_eq!(pick_roundrobin(&s, &mut rr), Some(1));
        s[0].state = ServerState::Down;
        s[1].state = ServerState::Down;
        assert_eq!(pick_roundrobin(&s, &mut rr), Some(2), "no primary is up");
    }

    #[test]
    fn smooth_weighted_sequence() {
        let s = [up(5), up(1), up(1)];
        let mut rr = RoundRobin::new(3);
        let seq: Vec<usize> = (0..7)
            .map(|_| pick_roundrobin(&s, &mut rr).unwrap())
            .collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn spreads_by_weight() {
        let s = [up(3), up(1)];
        let mut rr = RoundRobin::new(2);
        let mut n = [0; 2];
        for _ in 0..400 {
            n[pick_roundrobin(&s, &mut rr).unwrap()] += 1;
        }
        assert_eq!(n, [300, 100]);
    }

    #[test]
    fn skips_down_and_uses_backup_only_when_needed() {
        let mut s = [
            up(1),
            up(1),
            Candidate {
                backup: true,
                ..up(1)
            },
        ];
        let mut rr = RoundRobin::new(3);
        for _ in 0..10 {
            assert_ne!(pick_roundrobin(&s, &mut rr), Some(2));
        }
        s[0].state = ServerState::Down;
        for _ in 0..10 {
            assert_eq!(pick_roundrobin(&s, &mut rr), Some(1));
        }
        s[1].state = ServerState::Maint;
        assert_eq!(pick_roundrobin(&s, &mut rr), Some(2));
        s[2].excluded = true;
        assert_eq!(pick_roundrobin(&s, &mut rr), None);
    }

    #[test]
    fn drain_and_zero_weight_take_no_new_clients() {
        let s = [
            Candidate {
                state: ServerState::Drain,
                ..up(1)
            },
            up(0),
            up(1),
        ];
        let mut rr = RoundRobin::new(3);
        for _ in 0..5 {
            assert_eq!(pick_roundrobin(&s, &mut rr), Some(2));
        }
        assert!(sticky_ok(&s[0]));
    }

    #[test]
    fn leastconn_prefers_idle() {
        let s = [
            Candidate { active: 3, ..up(1) },
            Candidate { active: 1, ..up(1) },
            Candidate { active: 2, ..up(1) },
        ];
        let mut rr = RoundRobin::new(3);
        assert_eq!(pick_leastconn(&s, &mut rr), Some(1));
        // Weighted: 4 active on weight 4 beats 2 active on weight 1.
        let s = [
            Candidate { active: 4, ..up(4) },
            Candidate { active: 2, ..up(1) },
        ];
        assert_eq!(pick_leastconn(&s, &mut rr), Some(0));
    }

    #[test]
    fn leastconn_ties_rotate() {
        let s = [up(1), up(1), up(1)];
        let mut rr = RoundRobin::new(3);
        let seq: Vec<usize> = (0..3)
            .map(|_| pick_leastconn(&s, &mut rr).unwrap())
            .collect();
        assert_eq!(seq, vec![1, 2, 0]);
    }
}
