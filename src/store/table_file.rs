//! Reading a key table file: the only file I/O of the file store's load (the parsing is
//! `keys::file`'s). JSON Lines are streamed in chunks, so a large table never sits in memory
//! twice (as text and as records).

use std::path::Path;

use crate::keys::file::{parse, shape_of, JsonLines, Shape, TableError};
use crate::keys::{Catalogue, KeyTable};

/// Loads a table file. JSON Lines are streamed line by line, so a large table never sits in
/// memory twice (as text and as records). Every scope a key holds must be in `scopes`.
pub fn load(path: &Path, scopes: &Catalogue) -> Result<KeyTable, TableError> {
    use std::io::{Read, Seek};
    let source = path.display().to_string();
    let cannot = |e: std::io::Error| TableError { source: source.clone(), problems: vec![format!("cannot read: {e}")] };
    let mut f = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path).map_err(cannot)?);
    let size = f.get_ref().metadata().map_err(cannot)?.len();
    // Bytes, not a string: the 64 KiB may end inside a character, which is no fault of the file.
    let mut head = Vec::new();
    (&mut f).take(64 * 1024).read_to_end(&mut head).map_err(cannot)?;
    let head_text = String::from_utf8_lossy(&head);
    if shape_of(&head_text) == Shape::Yaml || head_text.trim().is_empty() {
        let mut bytes = head;
        f.read_to_end(&mut bytes).map_err(cannot)?;
        let text = String::from_utf8(bytes).map_err(|e| TableError {
            source: source.clone(),
            problems: vec![format!("not UTF-8: {}", e.utf8_error())],
        })?;
        return parse(&text, &source, scopes);
    }
    f.seek(std::io::SeekFrom::Start(0)).map_err(cannot)?;
    let mut lines = JsonLines::new(usize::try_from(size / 160).unwrap_or(0), scopes);
    // Whole lines out of 4 MiB chunks: bounded memory, one UTF-8 check per chunk.
    let mut chunk: Vec<u8> = Vec::with_capacity(4 << 20);
    let mut n = 0;
    loop {
        // Appended without zeroing the room first (as `resize` then `read` would: 4 MiB a turn).
        let got = (&mut f).take(4 << 20).read_to_end(&mut chunk).map_err(cannot)?;
        let end = if got == 0 { chunk.len() } else { chunk.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) };
        let text = std::str::from_utf8(&chunk[..end]).map_err(|e| TableError {
            source: source.clone(),
            problems: vec![format!("after line {n}: not UTF-8: {e}")],
        })?;
        for line in text.split_inclusive('\n') {
            n += 1;
            if !line.ends_with('\n') {
                // Every line ends in a newline: a missing one is the sign of a cut-off write.
                lines.problem(format!("line {n}: no newline at the end: the file looks truncated"));
            }
            lines.add(n, line);
        }
        chunk.drain(..end);
        if got == 0 {
            break;
        }
    }
    lines.finish().map_err(|problems| TableError { source, problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(path: &Path) -> Result<KeyTable, TableError> {
        super::load(path, &Catalogue::default())
    }

    fn jsonl(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    #[test]
    fn loading_a_file_streams_json_lines_and_agrees_with_parse() {
        let dir = std::env::temp_dir().join(format!("kg-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = jsonl(&[
            "# header".into(),
            format!(r#"{{"id":"k1","hash":"{}","environment":"live"}}"#, h('a')),
            format!(r#"{{"id":"k2","hash":"{}","environment":"live"}}"#, h('b')),
        ]);
        let p = dir.join("t.jsonl");
        std::fs::write(&p, &good).unwrap();
        assert_eq!(load(&p).unwrap().len(), 2);
        std::fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("truncated"));
        std::fs::write(&p, format!("{good}{{\"id\":\"k3\",\"hash\":\"nothex\",\"environment\":\"live\"}}\n")).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("line 4"));
        let y = dir.join("t.yaml");
        std::fs::write(&y, format!("keys:\n  - id: k1\n    hash: {}\n    environment: live\n", h('a'))).unwrap();
        assert_eq!(load(&y).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_character_across_the_first_64_kib_does_not_stop_a_load() {
        let dir = tempfile::tempdir().unwrap();
        // `é` is two bytes: the first is the last byte of the 64 KiB the shape is told from.
        let yaml = format!("#{}é\nkeys:\n  - id: k1\n    hash: {}\n    environment: live\n", "a".repeat(65534), h('a'));
        let p = dir.path().join("t.yaml");
        std::fs::write(&p, &yaml).unwrap();
        assert_eq!(load(&p).map(|t| t.len()).map_err(|e| e.to_string()), Ok(1));
        std::fs::write(&p, b"keys: []\n# \xff\n").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("not UTF-8"));
    }
}
