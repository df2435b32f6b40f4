//! Which reply codes mean "alive".
//!
//! The C module counts 2xx only. `ka_alive_codes` (a sca_rs extension)
//! takes a list such as `200-299,403,404,405`: a server that answers
//! OPTIONS with 404 or 405 is up, just not fond of OPTIONS. A local
//! timeout (tm's own 408) or a failure to send never counts as alive.

/// At most this many codes or ranges in the list.
pub const MAX_RANGES: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AliveCodes {
    ranges: [(u16, u16); MAX_RANGES],
    len: usize,
}

impl Default for AliveCodes {
    /// 2xx, as the C module.
    fn default() -> Self {
        let mut ranges = [(0, 0); MAX_RANGES];
        ranges[0] = (200, 299);
        AliveCodes { ranges, len: 1 }
    }
}

impl AliveCodes {
    /// Parse `200-299,403` (spaces around items allowed). Codes are 100..=699.
    pub fn parse(s: &str) -> Result<AliveCodes, String> {
        let mut ranges = [(0, 0); MAX_RANGES];
        let mut len = 0;
        for item in s.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("empty item in reply code list '{s}'"));
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (code(a.trim(), s)?, code(b.trim(), s)?),
                None => {
                    let c = code(item, s)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!("range {item} is empty in reply code list '{s}'"));
            }
            if len == MAX_RANGES {
                return Err(format!("more than {MAX_RANGES} items in reply code list '{s}'"));
            }
            ranges[len] = (lo, hi);
            len += 1;
        }
        Ok(AliveCodes { ranges, len })
    }

    pub fn contains(&self, code: u32) -> bool {
        self.ranges[..self.len].iter().any(|&(lo, hi)| (lo as u32..=hi as u32).contains(&code))
    }
}

fn code(t: &str, whole: &str) -> Result<u16, String> {
    match t.parse::<u16>() {
        Ok(c) if (100..=699).contains(&c) => Ok(c),
        _ => Err(format!("'{t}' is not a SIP reply code (100-699) in reply code list '{whole}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_2xx() {
        let c = AliveCodes::default();
        assert!(c.contains(200) && c.contains(299));
        assert!(!c.contains(199) && !c.contains(300) && !c.contains(408));
    }

    #[test]
    fn parses_lists_and_ranges() {
        let c = AliveCodes::parse(" 200-299, 403,404 ,405").expect("valid");
        for ok in [200, 250, 299, 403, 404, 405] {
            assert!(c.contains(ok), "{ok}");
        }
        for no in [100, 300, 402, 406, 408, 503] {
            assert!(!c.contains(no), "{no}");
        }
        assert_eq!(AliveCodes::parse("200-299").expect("valid"), AliveCodes::default());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "2xx", "200-", "-200", "299-200", "99", "700", "200,,300", "200-299-300"] {
            assert!(AliveCodes::parse(bad).is_err(), "{bad:?} accepted");
        }
        let many = vec!["200"; MAX_RANGES + 1].join(",");
        assert!(AliveCodes::parse(&many).is_err());
    }
}
