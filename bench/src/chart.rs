//! latency.svg: p50 / p99 / p99.9 per scenario and target, grouped bars, log scale.

use crate::records::ScenarioResult;
use crate::report::{us, Meta};
use std::fmt::Write as _;

const COLORS: [(&str, &str); 4] = [
    ("engine", "#d62728"),
    ("haproxy", "#1f77b4"),
    ("nginx", "#2ca02c"),
    ("direct", "#7f7f7f"),
];

/// Grouped bars, log scale: per scenario, per target, p50 / p99 / p99.9 (wrk).
pub fn svg(meta: &Meta, rs: &[ScenarioResult]) -> String {
    let c = Chart::new(rs);
    let (width, height, left) = (c.width, c.height, c.left);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<!-- produced by: {} -->",
        meta.command.replace("--", "- -")
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"22\" font-size=\"14\">Latency per scenario (wrk; bars: p50, p99, p99.9; log scale), {}</text>",
        meta.date
    );
    c.grid(&mut s);
    for (gi, r) in rs.iter().enumerate() {
        c.group(&mut s, gi, r);
    }
    c.legend(&mut s);
    s.push_str("</svg>\n");
    s
}

/// The latency chart's geometry and its log scale, from `lo` to `hi` µs.
struct Chart {
    bar: f64,
    tgap: f64,
    ggap: f64,
    /// the width of one scenario's group of bars
    gw: f64,
    left: f64,
    top: f64,
    h: f64,
    width: f64,
    height: f64,
    lo: f64,
    hi: f64,
}

impl Chart {
    fn new(rs: &[ScenarioResult]) -> Chart {
        let bar = 7.0;
        let tgap = 5.0;
        let ggap = 30.0;
        let ntargets = COLORS.len() as f64;
        let gw = ntargets * (3.0 * bar + tgap);
        let left = 70.0;
        let top = 50.0;
        let h = 300.0;
        let (lo, hi) = scale(rs);
        Chart {
            bar,
            tgap,
            ggap,
            gw,
            left,
            top,
            h,
            width: left + rs.len() as f64 * (gw + ggap) + 160.0,
            height: top + h + 90.0,
            lo,
            hi,
        }
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = (self.lo, self.hi);
        self.top + self.h - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * self.h
    }

    /// A line per power of ten.
    fn grid(&self, s: &mut String) {
        let left = self.left;
        let mut v = self.lo;
        while v <= self.hi * 1.0001 {
            let yy = self.y(v);
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.width - 150.0,
                left - 5.0,
                yy + 4.0,
                us(v)
            );
            v *= 10.0;
        }
    }

    /// Scenario `gi`: three bars per target (n/a when it has no figures), its name below.
    fn group(&self, s: &mut String, gi: usize, r: &ScenarioResult) {
        let (bar, top, h) = (self.bar, self.top, self.h);
        let gx = self.left + 10.0 + gi as f64 * (self.gw + self.ggap);
        for (ti, (name, color)) in COLORS.iter().enumerate() {
            let tx = gx + ti as f64 * (3.0 * bar + self.tgap);
            let t = r.targets.iter().find(|t| t.target == *name);
            let st = t.map(|t| [&t.summary.p50_us, &t.summary.p99_us, &t.summary.p999_us]);
            match st {
                Some(arr) if arr.iter().any(|x| x.is_some()) => {
                    for (pi, p) in arr.iter().enumerate() {
                        if let Some(p) = p {
                            let yy = self.y(p.median.max(1.0));
                            let op = [1.0, 0.65, 0.35][pi];
                            let _ = writeln!(
                                s,
                                "<rect x=\"{:.1}\" y=\"{yy:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{color}\" fill-opacity=\"{op}\"><title>{} {name} p{}: {}</title></rect>",
                                tx + pi as f64 * bar,
                                top + h - yy,
                                r.name,
                                ["50", "99", "99.9"][pi],
                                us(p.median)
                            );
                        }
                    }
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"8\" fill=\"{color}\" transform=\"rotate(-90 {:.1} {:.1})\">n/a</text>",
                        tx + 12.0,
                        top + h - 4.0,
                        tx + 12.0,
                        top + h - 4.0
                    );
                }
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + self.gw / 2.0,
            top + h + 18.0,
            r.name
        );
    }

    /// The targets' colours, and which bar is which percentile.
    fn legend(&self, s: &mut String) {
        let top = self.top;
        let lx = self.width - 140.0;
        for (i, (name, color)) in COLORS.iter().enumerate() {
            let ly = top + 10.0 + i as f64 * 18.0;
            let _ = writeln!(
                s,
                "<rect x=\"{lx}\" y=\"{:.0}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{:.0}\" y=\"{:.0}\">{name}</text>",
                ly,
                lx + 18.0,
                ly + 10.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{lx}\" y=\"{:.0}\">dark → light:</text><text x=\"{lx}\" y=\"{:.0}\">p50, p99, p99.9</text>",
            top + 100.0,
            top + 114.0
        );
    }
}

/// The powers of ten below and above every percentile shown.
fn scale(rs: &[ScenarioResult]) -> (f64, f64) {
    let mut vals = Vec::new();
    for r in rs {
        for t in &r.targets {
            for s in [&t.summary.p50_us, &t.summary.p99_us, &t.summary.p999_us]
                .into_iter()
                .flatten()
            {
                vals.push(s.median.max(1.0));
            }
        }
    }
    let lo = 10f64
        .powf(
            vals.iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .log10()
                .floor(),
        )
        .max(1.0);
    let hi = 10f64.powf(vals.iter().copied().fold(10.0, f64::max).log10().ceil());
    let lo = if lo.is_finite() {
        lo.min(hi / 10.0)
    } else {
        1.0
    };
    (lo, hi)
}
