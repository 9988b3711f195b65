//! Info-protocol request parsing (spec §9.1): a body of `\n`-terminated ASCII commands.
//!
//! Owns only the split into commands and the `name:key=value;...` / `name/arg` syntax. It must
//! never decide answers; the server does.

/// Longest info request body the server will parse; tend requests are tiny.
pub const INFO_REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// Most commands one info request may carry. A client's tend sends about ten and a tool a few
/// dozen; without a bound, 1 MiB of `replicas\n` is 116,508 commands and a reply of 82 MB.
/// Aerospike (8.1.2.0) answers any number; Apogee refuses the whole request instead, so no
/// command of it runs.
pub const INFO_COMMANDS_MAX: usize = 1024;

/// Why an info request is refused as a whole, before any of its commands runs.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InfoRequestError {
    #[error("info request over {INFO_REQUEST_BYTES_MAX} bytes")]
    TooLong,
    #[error("info request over {INFO_COMMANDS_MAX} commands")]
    TooManyCommands,
    #[error("info request is not valid UTF-8")]
    NotUtf8,
}

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

/// Splits an info request into commands; empty lines are dropped. A body over
/// [`INFO_REQUEST_BYTES_MAX`], over [`INFO_COMMANDS_MAX`] commands, or not UTF-8 is an error.
pub fn parse_request(body: &[u8]) -> Result<Vec<InfoCommand<'_>>, InfoRequestError> {
    if body.len() > INFO_REQUEST_BYTES_MAX {
        return Err(InfoRequestError::TooLong);
    }
    let text = std::str::from_utf8(body).map_err(|_| InfoRequestError::NotUtf8)?;
    let mut cmds = Vec::new();
    for raw in text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
    {
        if cmds.len() == INFO_COMMANDS_MAX {
            return Err(InfoRequestError::TooManyCommands);
        }
        let (name, args) = match raw.find([':', '/']) {
            Some(i) => (&raw[..i], &raw[i + 1..]),
            None => (raw, ""),
        };
        cmds.push(InfoCommand { raw, name, args });
    }
    debug_assert!(cmds.len() <= INFO_COMMANDS_MAX);
    Ok(cmds)
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
        assert_eq!(
            parse_request(&[0xff, b'\n']),
            Err(InfoRequestError::NotUtf8)
        );
    }

    #[test]
    fn requests_are_bounded() {
        let most = "node\n".repeat(INFO_COMMANDS_MAX);
        assert_eq!(
            parse_request(most.as_bytes()).unwrap().len(),
            INFO_COMMANDS_MAX
        );
        // Empty lines are not commands and do not count.
        let padded = format!("{most}\n\n\r\n");
        assert_eq!(
            parse_request(padded.as_bytes()).unwrap().len(),
            INFO_COMMANDS_MAX
        );
        let one_more = format!("{most}build\n");
        assert_eq!(
            parse_request(one_more.as_bytes()),
            Err(InfoRequestError::TooManyCommands)
        );
        let long = vec![b'x'; INFO_REQUEST_BYTES_MAX + 1];
        assert_eq!(parse_request(&long), Err(InfoRequestError::TooLong));
        let just = vec![b'x'; INFO_REQUEST_BYTES_MAX];
        assert_eq!(parse_request(&just).unwrap().len(), 1);
    }
}
