//! The markdown the benchmarks print: tables, durations and verdicts.

use std::fmt;
use std::time::Duration;

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text: left (`---`).
    Left,
    /// Numbers: right (`---:`).
    Right,
}

/// A markdown table: a header, an alignment row, then one line per row.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    #[must_use]
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            header: columns.iter().map(|(name, _)| (*name).to_owned()).collect(),
            align: columns.iter().map(|&(_, align)| align).collect(),
            rows: Vec::new(),
        }
    }

    /// A table whose columns are all text.
    #[must_use]
    pub fn text(columns: &[&str]) -> Table {
        let columns: Vec<(&str, Align)> = columns.iter().map(|&c| (c, Align::Left)).collect();
        Table::new(&columns)
    }

    /// Adds a row of cells.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

impl fmt::Display for Table {
    /// Every line ends with a newline; no blank line follows the table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line =
            |f: &mut fmt::Formatter<'_>, cells: &[String]| writeln!(f, "| {} |", cells.join(" | "));
        line(f, &self.header)?;
        let rule: Vec<String> = self
            .align
            .iter()
            .map(|a| match a {
                Align::Left => "---".to_owned(),
                Align::Right => "---:".to_owned(),
            })
            .collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

/// `d` in milliseconds with `decimals` decimals: `12.5 ms`.
#[must_use]
pub fn ms(d: Duration, decimals: usize) -> String {
    format!("{:.*} ms", decimals, d.as_secs_f64() * 1e3)
}

/// `met`, or `**not met**` in bold.
#[must_use]
pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_prints_as_markdown() {
        let mut table = Table::new(&[("what", Align::Left), ("n", Align::Right)]);
        table.row(["a", "1"]);
        table.row([String::from("b"), String::from("2")]);
        assert_eq!(
            table.to_string(),
            "| what | n |\n| --- | ---: |\n| a | 1 |\n| b | 2 |\n"
        );
    }

    #[test]
    fn durations_print_in_milliseconds() {
        assert_eq!(ms(Duration::from_micros(12_346), 1), "12.3 ms");
        assert_eq!(ms(Duration::from_micros(12_346), 2), "12.35 ms");
    }
}
