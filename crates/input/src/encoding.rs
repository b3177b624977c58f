//! Bulk files as Chinese operators have them: Excel in China saves "CSV" as GBK, so a bulk
//! file is read through [`Decode`], which hands the row readers UTF-8 whatever came in.
use std::io::{self, BufRead, Read};

/// How a bulk file's bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8 (a byte-order mark is skipped), unless the first non-ASCII bytes are not UTF-8:
    /// then GBK. ASCII is the same in both, so the first non-ASCII character decides.
    #[default]
    Auto,
    /// UTF-8; other bytes are refused with their line.
    Utf8,
    /// GBK (read as GB 18030, its superset, as Excel and browsers do).
    Gbk,
}

impl Encoding {
    /// `auto`, `utf-8` (`utf8`) or `gbk` (`gb18030`, `gb2312`), in any case.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name.to_ascii_lowercase().as_str() {
            "auto" => Some(Encoding::Auto),
            "utf-8" | "utf8" => Some(Encoding::Utf8),
            "gbk" | "gb18030" | "gb2312" | "cp936" => Some(Encoding::Gbk),
            _ => None,
        }
    }
}

/// What a cell that is not UTF-8 is told; the file may be GBK read as UTF-8.
pub(crate) const NOT_UTF8: &str =
    "not valid UTF-8 (a file Excel saved as \"CSV\" in China is GBK: give encoding gbk, or save it as \"CSV UTF-8\")";

/// Bytes not yet known to be either: how many are looked at to decide.
const SNIFF: usize = 1024;

/// Where [`Decode`] is in its input.
enum State {
    /// Only ASCII so far: bytes pass through.
    Undecided,
    /// UTF-8: bytes pass through (the row readers check them).
    Utf8,
    /// GBK: bytes are decoded into `out`.
    Gbk(Box<encoding_rs::Decoder>),
}

fn gbk() -> State {
    State::Gbk(Box::new(
        encoding_rs::GB18030.new_decoder_without_bom_handling(),
    ))
}

/// Bytes that are not text in the file's encoding, on line `line`.
#[derive(Debug, thiserror::Error)]
#[error("not valid GBK (is the file in another encoding? save it as \"CSV UTF-8\")")]
pub(crate) struct NotGbk {
    pub(crate) line: u64,
}

/// A reader of UTF-8 over a bulk file in any [`Encoding`]. It buffers the file itself: the
/// byte-order mark and the decision need a few bytes in hand at once.
pub(crate) struct Decode<R> {
    inner: R,
    /// The file's bytes, from `start` to `end` not yet read.
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    /// While undecided, `raw` up to here is known to be ASCII: each byte is looked at once.
    ascii_end: usize,
    inner_eof: bool,
    state: State,
    /// GBK decoded into UTF-8, from `taken` on not yet read.
    out: Vec<u8>,
    taken: usize,
    /// Lines decoded before `out`, for errors.
    lines: u64,
    at_start: bool,
    eof: bool,
}

impl<R: Read> Decode<R> {
    pub(crate) fn new(inner: R, encoding: Encoding) -> Decode<R> {
        let state = match encoding {
            Encoding::Auto => State::Undecided,
            Encoding::Utf8 => State::Utf8,
            Encoding::Gbk => gbk(),
        };
        Decode {
            inner,
            raw: vec![0; 1 << 20].into_boxed_slice(),
            start: 0,
            end: 0,
            ascii_end: 0,
            inner_eof: false,
            state,
            out: Vec::new(),
            taken: 0,
            lines: 0,
            at_start: true,
            eof: false,
        }
    }

    /// At least `n` bytes in hand, unless the file ends first.
    fn fill(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.end - self.start < n && !self.inner_eof {
            self.raw.copy_within(self.start..self.end, 0);
            self.ascii_end = self.ascii_end.saturating_sub(self.start);
            (self.end, self.start) = (self.end - self.start, 0);
            while self.end < n && !self.inner_eof {
                match self.inner.read(&mut self.raw[self.end..]) {
                    Ok(0) => self.inner_eof = true,
                    Ok(read) => self.end += read,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.raw[self.start..self.end])
    }

    /// Skips a UTF-8 byte-order mark, which also settles an `Auto` encoding.
    fn skip_bom(&mut self) -> io::Result<()> {
        self.at_start = false;
        if matches!(self.state, State::Gbk(_)) {
            return Ok(());
        }
        if self.fill(3)?.starts_with(b"\xEF\xBB\xBF") {
            self.start += 3;
            self.state = State::Utf8;
        }
        Ok(())
    }

    /// The next GBK bytes decoded into `out`; false at the end of the input.
    fn decode_more(&mut self) -> io::Result<bool> {
        self.fill(1)?;
        let State::Gbk(decoder) = &mut self.state else {
            return Ok(false);
        };
        let src = &self.raw[self.start..self.end];
        let last = src.is_empty();
        self.lines += self.out.iter().filter(|&&b| b == b'\n').count() as u64;
        self.out.clear();
        self.taken = 0;
        // GBK's two bytes become at most three, its four at most four.
        self.out.resize(src.len() * 3 / 2 + 16, 0);
        let (result, read, written) =
            decoder.decode_to_utf8_without_replacement(src, &mut self.out, last);
        self.out.truncate(written);
        if let encoding_rs::DecoderResult::Malformed(..) = result {
            let line = self.lines + 1 + self.out.iter().filter(|&&b| b == b'\n').count() as u64;
            return Err(io::Error::new(io::ErrorKind::InvalidData, NotGbk { line }));
        }
        self.start += read;
        self.eof = last;
        Ok(!last || written > 0)
    }
}

impl<R: Read> Read for Decode<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let n = {
            let src = self.fill_buf()?;
            let n = src.len().min(dst.len());
            dst[..n].copy_from_slice(&src[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Decode<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at_start {
            self.skip_bom()?;
        }
        if let State::Undecided = self.state {
            self.fill(1)?;
            let from = self.ascii_end.max(self.start);
            match self.raw[from..self.end].iter().position(|b| !b.is_ascii()) {
                None => {
                    self.ascii_end = self.end;
                    return Ok(&self.raw[self.start..self.end]);
                }
                // The ASCII before it first, so that the decision sees a full window.
                Some(at) if from + at > self.start => {
                    self.ascii_end = from + at;
                    return Ok(&self.raw[self.start..from + at]);
                }
                Some(_) => {
                    let window = self.fill(SNIFF)?;
                    let window = &window[..window.len().min(SNIFF)];
                    // A character cut at the window's end is no evidence against UTF-8.
                    let utf8 = std::str::from_utf8(window)
                        .map_or_else(|e| e.error_len().is_none(), |_| true);
                    self.state = if utf8 { State::Utf8 } else { gbk() };
                }
            }
        }
        if let State::Utf8 = self.state {
            return self.fill(1);
        }
        while self.taken == self.out.len() && !self.eof {
            if !self.decode_more()? {
                break;
            }
        }
        Ok(&self.out[self.taken..])
    }

    fn consume(&mut self, n: usize) {
        match self.state {
            State::Gbk(_) => self.taken += n,
            _ => self.start += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], encoding: Encoding, chunk: usize) -> io::Result<String> {
        let mut out = String::new();
        Decode::new(Trickle(bytes, chunk), encoding).read_to_string(&mut out)?;
        Ok(out)
    }

    /// A reader that gives at most `.1` bytes a call.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(dst.len());
            dst[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn gbk_bytes(text: &str) -> Vec<u8> {
        let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
        assert!(!unmappable);
        bytes.into_owned()
    }

    const TEXT: &str = "url,code\nhttps://例子.中国/商品?颜色=红,a1\nhttps://x.cn/,b2\n";

    #[test]
    fn auto_reads_utf8_gbk_and_a_byte_order_mark() {
        for chunk in [1, 2, 3, 7, 64, 1 << 16] {
            assert_eq!(
                read(TEXT.as_bytes(), Encoding::Auto, chunk).expect("decodes"),
                TEXT
            );
            assert_eq!(
                read(&gbk_bytes(TEXT), Encoding::Auto, chunk).expect("decodes"),
                TEXT
            );
            let bom = [b"\xEF\xBB\xBF", TEXT.as_bytes()].concat();
            assert_eq!(read(&bom, Encoding::Auto, chunk).expect("decodes"), TEXT);
            assert_eq!(
                read(&gbk_bytes(TEXT), Encoding::Gbk, chunk).expect("decodes"),
                TEXT
            );
        }
    }

    #[test]
    fn the_first_non_ascii_character_decides_however_late() {
        let ascii = "url,code\n".to_owned() + &"https://x.cn/,c\n".repeat(100_000);
        let late = ascii.clone() + "https://x.cn/春,d\n";
        assert_eq!(
            read(&gbk_bytes(&late), Encoding::Auto, 8192).expect("decodes"),
            late
        );
        assert_eq!(
            read(late.as_bytes(), Encoding::Auto, 8192).expect("decodes"),
            late
        );
    }

    #[test]
    fn utf8_passes_bad_bytes_on_and_bad_gbk_names_its_line() {
        // Forced UTF-8 leaves GBK bytes for the row reader to refuse, with its cell.
        let raw = read(&gbk_bytes(TEXT), Encoding::Utf8, 64);
        assert_eq!(raw.expect_err("refused").kind(), io::ErrorKind::InvalidData);
        let mut bad = gbk_bytes("url,code\nhttps://x.cn/中,a\n");
        bad.extend_from_slice(b"https://x.cn/\xFF\xFF,b\n");
        let e = read(&bad, Encoding::Gbk, 64).expect_err("refused");
        let not = e
            .get_ref()
            .and_then(|e| e.downcast_ref::<NotGbk>())
            .expect("decodes");
        assert_eq!(not.line, 3);
    }

    #[test]
    fn names() {
        assert_eq!(Encoding::from_name("UTF-8"), Some(Encoding::Utf8));
        assert_eq!(Encoding::from_name("gb18030"), Some(Encoding::Gbk));
        assert_eq!(Encoding::from_name("auto"), Some(Encoding::Auto));
        assert_eq!(Encoding::from_name("latin1"), None);
    }
}
