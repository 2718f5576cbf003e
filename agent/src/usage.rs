//! A wrong command line in one line, for bootcache and bootcache-agent
//! alike (the project's rule: one line that says what to fix).

/// clap's message without its usage block: it runs until the blank line
/// before "Usage:" (a missing argument is named on the line after the
/// first), joined into one line, without the leading "error: ".
pub fn one_line(e: &clap::Error) -> String {
    let rendered = e.to_string();
    let words: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let what = words.join(" ");
    what.strip_prefix("error: ").unwrap_or(&what).to_string()
}
