//! Info-protocol request parsing (spec §9.1): a body of `\n`-terminated ASCII commands.
//!
//! Owns only the split into commands and the `name:key=value;...` / `name/arg` syntax. It must
//! never decide answers; the server does.

/// Longest info request body the server will parse; tend requests are tiny.
pub const INFO_REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// One command of an info request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoCommand<'a> {
    /// The command exactly as received, echoed before the tab in the reply.
    pub raw: &'a str,
    /// The name: everything before the first `:` or `/`.
    pub name: &'a str,
    /// Everything after the first `:` or `/` (empty when absent).
    pub args: &'a str,
}

impl<'a> InfoCommand<'a> {
    /// The value of `key` in `name:key=value;key=value`.
    pub fn param(&self, key: &str) -> Option<&'a str> {
        self.args
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// Splits an info request into commands; empty lines are dropped. Invalid UTF-8 is an error.
pub fn parse_request(body: &[u8]) -> Result<Vec<InfoCommand<'_>>, std::str::Utf8Error> {
    let text = std::str::from_utf8(body)?;
    Ok(text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|raw| {
            let split = raw.find([':', '/']);
            let (name, args) = match split {
                Some(i) => (&raw[..i], &raw[i + 1..]),
                None => (raw, ""),
            };
            InfoCommand { raw, name, args }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_commands_and_params() {
        let cmds =
            parse_request(b"node\nnamespace/test\ntruncate:namespace=test;set=demo\n").unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0].name, "node");
        assert_eq!(cmds[1].name, "namespace");
        assert_eq!(cmds[1].args, "test");
        assert_eq!(cmds[2].param("set"), Some("demo"));
        assert_eq!(cmds[2].raw, "truncate:namespace=test;set=demo");
        assert!(parse_request(&[0xff, b'\n']).is_err());
    }
}
