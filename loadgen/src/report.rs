//! Collects each figure over runs and prints min / median / max for Noom and the baseline, with
//! the ratio of the medians (ours / baseline).

use std::fmt::Write as _;

use crate::wire::Dialect;

#[derive(Debug, Default)]
struct Row {
    group: String,
    figure: String,
    ours: Vec<f64>,
    base: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// min, median, max (median of an even count: mean of the middle two).
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

pub fn num(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(values: &[f64]) -> String {
    match summary(values) {
        None => "–".into(),
        Some((min, med, max)) if values.len() == 1 || min == max => num(med),
        Some((min, med, max)) => format!("{} / **{}** / {}", num(min), num(med), num(max)),
    }
}

impl Table {
    pub fn add(&mut self, group: &str, figure: &str, dialect: Dialect, value: f64) {
        let index = match self
            .rows
            .iter()
            .position(|r| r.group == group && r.figure == figure)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    group: group.into(),
                    figure: figure.into(),
                    ..Row::default()
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[index];
        match dialect {
            Dialect::Noom => row.ours.push(value),
            Dialect::SocketIo => row.base.push(value),
        }
    }

    pub fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// A markdown table: one line per figure.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| shape | figure | Noom min / **median** / max | socket.io min / **median** / max | ours / baseline |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for row in &self.rows {
            let ratio = match (summary(&row.ours), summary(&row.base)) {
                (Some((_, a, _)), Some((_, b, _))) if b != 0.0 => format!("{:.2}×", a / b),
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                row.group,
                row.figure,
                cell(&row.ours),
                cell(&row.base),
                ratio
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_cells() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(summary(&[f64::NAN]), None);
        let mut t = Table::default();
        t.add("S3", "CPU s / 100k", Dialect::Noom, 0.5);
        t.add("S3", "CPU s / 100k", Dialect::SocketIo, 1.0);
        let md = t.markdown();
        assert!(
            md.contains("| S3 | CPU s / 100k | 0.50 | 1.00 | 0.50× |"),
            "{md}"
        );
    }
}
