use std::collections::BTreeMap;
use std::path::Path;

use std::io::Read;

/// Most bytes of `$GANGER_OUTPUT` read: outputs travel through the store and
/// into templates, and a task that dumps a build log there must not cost the
/// server memory.
pub(crate) const OUTPUT_CAP: u64 = 1024 * 1024;

/// Longest excerpt of a malformed line quoted in a warning.
const QUOTE_MAX: usize = 60;

#[derive(Default)]
pub(crate) struct Parsed {
    pub(crate) outputs: BTreeMap<String, String>,
    pub(crate) warnings: Vec<String>,
}

/// Reads and parses the output file. A missing file (the script wrote no
/// outputs) simply yields no outputs. The read is synchronous: the file is
/// local and capped, and a blocking-pool round trip per task costs more.
pub(crate) fn read(path: &Path) -> Parsed {
    let mut bytes = Vec::new();
    if let Err(error) = read_capped(path, &mut bytes) {
        return Parsed {
            outputs: BTreeMap::new(),
            warnings: vec![format!(
                "cannot read output file {}: {error}",
                path.display()
            )],
        };
    }
    let mut warnings = Vec::new();
    if bytes.len() as u64 > OUTPUT_CAP {
        // Keep whole lines only: the one cut by the cap would be a wrong value.
        bytes.truncate(OUTPUT_CAP as usize);
        let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(end);
        warnings.push(format!(
            "output file is larger than {OUTPUT_CAP} bytes: the rest was ignored"
        ));
    }
    let mut parsed = parse(&bytes);
    warnings.append(&mut parsed.warnings);
    parsed.warnings = warnings;
    parsed
}

/// Reads at most one byte past the cap, which is enough to tell it was hit.
fn read_capped(path: &Path, bytes: &mut Vec<u8>) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.take(OUTPUT_CAP + 1).read_to_end(bytes).map(drop),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Parses `key=value` lines. The value is everything after the first `=`,
/// kept verbatim; a later key overrides an earlier one, like `>>` appends
/// in a script that sets the same output twice.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        if line.is_empty() {
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            parsed.warnings.push(format!(
                "output file line {number}: not valid UTF-8, ignored"
            ));
            continue;
        };
        match line.split_once('=') {
            Some((key, value)) if is_valid_key(key) => {
                parsed.outputs.insert(key.to_owned(), value.to_owned());
            }
            _ => parsed.warnings.push(format!(
                "output file line {number}: expected key=value with a key like \
                 [A-Za-z_][A-Za-z0-9_.-]*, got {:?}; ignored",
                quote(line)
            )),
        }
    }
    parsed
}

/// Whether `key` can name an output: `^[A-Za-z_][A-Za-z0-9_.-]*$`, so that
/// templates read it as `tasks.<name>.outputs.<key>`. Every way of setting
/// outputs follows it.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn quote(line: &str) -> String {
    match line.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_and_overrides() {
        let parsed = parse(b"a=1\nb=x=y\n\nc= spaced \na=2\n_k.v-2=\n");
        let expected: BTreeMap<String, String> =
            [("a", "2"), ("b", "x=y"), ("c", " spaced "), ("_k.v-2", "")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(parsed.outputs, expected);
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }

    #[test]
    fn warns_on_malformed_lines_with_their_number() {
        let parsed = parse(b"ok=1\nno equals\n9x=1\n=v\n\xff=1\nk y=2\n");
        assert_eq!(parsed.outputs.len(), 1);
        let lines: Vec<bool> = (2..=6)
            .map(|n| {
                parsed
                    .warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("output file line {n}:")))
            })
            .collect();
        assert_eq!(lines, [true; 5], "{:?}", parsed.warnings);
    }

    #[test]
    fn key_rules() {
        for good in ["a", "_", "A1", "a.b-c_d"] {
            assert!(is_valid_key(good), "{good}");
        }
        for bad in ["", "1a", "-a", ".a", "a b", "é"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn caps_large_files_at_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let mut content = String::new();
        let mut n = 0;
        while content.len() as u64 <= OUTPUT_CAP {
            content.push_str(&format!("k{n}=value-{n}\n"));
            n += 1;
        }
        std::fs::write(&path, &content).expect("write");
        let parsed = read(&path);
        assert!(parsed.warnings[0].contains("larger than"));
        assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
        let last = parsed.outputs.len() - 1;
        // Every kept value is whole.
        assert!(
            parsed
                .outputs
                .iter()
                .all(|(k, v)| v == &format!("value-{}", &k[1..]))
        );
        assert!(last < n);
    }

    #[tokio::test]
    async fn missing_file_yields_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parsed = read(&dir.path().join("absent"));
        assert!(parsed.outputs.is_empty() && parsed.warnings.is_empty());
    }
}
