//! A data-only, bounded decoder for Python pickles: Django sessions as JSON.
//!
//! Django's `cache` session engine stores a session as `pickle.dumps(dict)`. Unpickling
//! with CPython imports modules and calls whatever the bytes name, so a value an attacker
//! can write to Redis runs code on any reader that unpickles it. This decoder reads the
//! pickle as a program for a small stack machine that only builds data:
//!
//! - **Nothing is imported or called.** `GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`,
//!   `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, `EXT1/2/4` and `PERSID/BINPERSID` take their
//!   operands off the stack and leave an opaque marker, which becomes JSON `null`. A
//!   `datetime` the application stored, a model instance, an `OrderedDict`, a hostile
//!   `os.system` payload: all decode to `null` for that value, without a name ever being
//!   looked at. `BUILD` keeps its target as a marker (and turns a data target into one);
//!   `APPEND`, `SETITEM(S)` and `ADDITEMS` on a marker drop their operands. A top level
//!   that is not a dict (a marker included) is [`PickleError::NotADict`].
//! - **Bounded.** The stack machine is a loop, not a recursion. Objects live in an arena
//!   and the stack, memo and containers hold indices, as CPython's hold references, so a
//!   `GET` or `DUP` never copies. The arena holds at most [`Limits::max_values`] objects,
//!   every length read from the input is checked against the bytes that remain before
//!   anything is sliced or allocated, and `MARK` nesting is bounded by
//!   [`Limits::max_depth`]. Parsing is linear in the input.
//! - **Memo references are counted.** The conversion to [`serde_json::Value`] copies a
//!   shared object once per reference, so it walks the object graph with an explicit
//!   stack and counts every value, dict entry and string byte it emits, each reference a
//!   full copy: a memo bomb (a list of ten references to a list of ten references …,
//!   thirty levels deep, a few hundred bytes long) fails with
//!   [`PickleError::LimitExceeded`] after at most [`Limits::max_values`] steps, and a
//!   self-referencing list fails on [`Limits::max_depth`].
//!
//! # Why not `serde-pickle`
//!
//! serde-pickle 1.2 never imports either (Rust cannot), and `replace_unresolved_globals`
//! turns unknown globals into `None`. But it emulates a few calls itself (`set`, `list`,
//! `bytearray`, `int`, `_codecs.encode`, `copyreg._reconstructor`), and `BUILD` replaces
//! an object with its state, so attacker-chosen state shows up as data where an object
//! was. And nothing is bounded, which we checked against 1.2.0 with a 2 GB address-space
//! cap: `DUP` deep-clones, so 40 `DUP`+`APPEND` pairs (89 bytes) double a list 40 times
//! and abort the process out of memory; every memo read clones the value, so a 60 KB
//! pickle of one 20 000-item list read back 20 000 times does the same; and its value
//! conversion recurses per nesting level, so 200 000 nested lists overflow the stack
//! (an abort, not an error). Its per-entry reference count does stop the classic nested
//! memo bomb, as a side effect, with a "recursive structure" error. None of these bounds can be
//! added from outside its API.
//!
//! # JSON mapping
//!
//! | Python | JSON |
//! |---|---|
//! | `dict` | object; `str` keys as is, `int` keys as their decimal string, entries with any other key (bytes, tuple, None, bool, float, big int, marker) skipped; a later duplicate key wins |
//! | `list`, `tuple`, `set`, `frozenset` | array (sets in pickle order) |
//! | `str` | string; invalid UTF-8 (a lone surrogate) is [`PickleError::InvalidUtf8`] |
//! | `bytes` (protocol 3+), `bytearray` (protocol 5) | string when valid UTF-8, else `null` |
//! | Python 2 `str` (`STRING`, `BINSTRING`, `SHORT_BINSTRING`) | string when valid UTF-8 (a key too), else `null` (a skipped key); CPython 3 decodes them as ASCII or fails |
//! | `int` within `i64` or `u64` | number; larger is `null` |
//! | `float` | number; NaN and infinities are `null` |
//! | `True`, `False`, `None` | `true`, `false`, `null` |
//! | anything built by a call | `null` (see above) |
//!
//! Protocols before 4 pickle `set`/`frozenset` (and, before 3, `bytes`; before 5,
//! `bytearray`) as calls, so those values are `null` there. Django writes with
//! `pickle.HIGHEST_PROTOCOL` (5 on the Pythons it supports). Out-of-band buffers
//! (`NEXT_BUFFER`, `READONLY_BUFFER`), unknown opcodes, protocols above 5 and bytes after
//! `STOP` are errors.
//!
//! ```
//! use exchange::pickle::{Limits, decode};
//! // pickle.dumps({'_auth_user_id': '42'}, protocol=5)
//! let bytes = b"\x80\x05\x95\x19\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\r_auth_user_id\x94\x8c\x0242\x94s.";
//! let session = decode(bytes, Limits::default()).expect("a data-only pickle");
//! assert_eq!(session["_auth_user_id"], "42");
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::{Map, Number, Value};

/// The hard ceiling on [`Limits::max_depth`]: serde_json's own recursion limit, so a
/// decoded session always re-parses and drops without deep recursion.
pub const DEPTH_CEILING: usize = 128;

/// Decodes a pickled dict into a JSON object, as data only and within `limits`.
///
/// The caller bounds the input's length (sessions over 64 KiB are refused before this).
///
/// # Errors
///
/// [`PickleError`] when the pickle is malformed or truncated, uses an unsupported opcode
/// or protocol, exceeds a limit, or its top-level value is not a dict.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<Value, PickleError> {
    let limits = Limits {
        max_depth: limits.max_depth.min(DEPTH_CEILING),
        ..limits
    };
    let mut machine = Machine::new(bytes, limits);
    let root = machine.run()?;
    Converter::new(&machine.nodes, limits).convert(root)
}

/// Bounds on one [`decode`]. Memo references count as full copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest container nesting, the top-level dict being level 1; also the deepest
    /// `MARK` nesting. Clamped to [`DEPTH_CEILING`]. Default 32.
    pub max_depth: usize,
    /// Most values in the result (containers, scalars and dict entries, skipped entries
    /// included), and most objects built while parsing. Default 16 384.
    pub max_values: usize,
    /// Most string and bytes content in the result, dict keys included. Default 256 KiB.
    pub max_bytes: usize,
}

/// Why a pickle was not decoded. Messages give offsets, never input bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The input ends before `STOP` or inside an opcode's argument.
    #[error("pickle is truncated")]
    Truncated,
    /// A byte that is no pickle opcode.
    #[error("unknown pickle opcode at offset {offset}")]
    UnknownOpcode {
        /// Offset of the opcode.
        offset: usize,
    },
    /// `PROTO` names a protocol above 5.
    #[error("unsupported pickle protocol at offset {offset}")]
    UnsupportedProtocol {
        /// Offset of the `PROTO` opcode.
        offset: usize,
    },
    /// `NEXT_BUFFER` or `READONLY_BUFFER`: out-of-band data a session never has.
    #[error("out-of-band buffer opcode at offset {offset}")]
    OutOfBandBuffer {
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode pops more than the stack (above the innermost mark) holds, or there is
    /// no mark to pop.
    #[error("pickle stack underflow at offset {offset}")]
    StackUnderflow {
        /// Offset of the opcode.
        offset: usize,
    },
    /// A memo read names an index that was never stored.
    #[error("pickle memo read of a missing entry at offset {offset}")]
    MissingMemo {
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode's argument is malformed: a bad number, quoting, escape or length.
    #[error("malformed pickle opcode argument at offset {offset}")]
    BadArgument {
        /// Offset of the opcode.
        offset: usize,
    },
    /// An opcode applied to the wrong kind of object (`APPEND` to a dict, say), or an
    /// odd number of items for a dict.
    #[error("pickle opcode at offset {offset} needs {expected}")]
    WrongType {
        /// Offset of the opcode.
        offset: usize,
        /// What the opcode needed.
        expected: &'static str,
    },
    /// Text that is not valid Unicode: invalid UTF-8, a lone surrogate (Python allows
    /// them; JSON does not), or a malformed protocol 0 `\u` escape.
    #[error("pickle text at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the opcode.
        offset: usize,
    },
    /// Bytes follow the `STOP` opcode.
    #[error("bytes after the pickle's STOP, at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
    },
    /// A [`Limits`] bound was reached.
    #[error("pickle exceeds the {0} limit")]
    LimitExceeded(Limit),
    /// The top-level value is not a dict (an object built by a call included).
    #[error("pickle's top-level value is not a dict")]
    NotADict,
}

/// Which of the [`Limits`] was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::max_depth`].
    Depth,
    /// [`Limits::max_values`].
    Values,
    /// [`Limits::max_bytes`].
    Bytes,
}

// === impl Limits ===

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_values: 16 * 1024,
            max_bytes: 256 * 1024,
        }
    }
}

// === impl PickleError ===

impl PickleError {
    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::UnknownOpcode { .. } => "unknown_opcode",
            Self::UnsupportedProtocol { .. } => "unsupported_protocol",
            Self::OutOfBandBuffer { .. } => "out_of_band_buffer",
            Self::StackUnderflow { .. } => "stack_underflow",
            Self::MissingMemo { .. } => "missing_memo",
            Self::BadArgument { .. } => "bad_argument",
            Self::WrongType { .. } => "wrong_type",
            Self::InvalidUtf8 { .. } => "invalid_utf8",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::LimitExceeded(Limit::Depth) => "depth_limit",
            Self::LimitExceeded(Limit::Values) => "values_limit",
            Self::LimitExceeded(Limit::Bytes) => "bytes_limit",
            Self::NotADict => "not_a_dict",
        }
    }
}

// === impl Limit ===

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Depth => "depth",
            Self::Values => "values",
            Self::Bytes => "bytes",
        })
    }
}

// === the stack machine ===

/// An index into the object arena: what CPython's stack and memo hold as references.
type Handle = u32;

/// One object built by the pickle.
#[derive(Debug)]
enum Node<'a> {
    None,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// An integer outside `i64` and `u64`.
    BigInt,
    Float(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    List(Vec<Handle>),
    /// A tuple, set or frozenset: an array that `APPEND` may not extend.
    Tuple(Vec<Handle>),
    Set(Vec<Handle>),
    Dict(Vec<(Handle, Handle)>),
    /// Whatever a global, a call or object construction would have produced.
    Opaque,
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for errors.
    at: usize,
    limits: Limits,
    nodes: Vec<Node<'a>>,
    stack: Vec<Handle>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Handle>,
}

mod op {
    pub(super) const MARK: u8 = b'(';
    pub(super) const STOP: u8 = b'.';
    pub(super) const POP: u8 = b'0';
    pub(super) const POP_MARK: u8 = b'1';
    pub(super) const DUP: u8 = b'2';
    pub(super) const FLOAT: u8 = b'F';
    pub(super) const INT: u8 = b'I';
    pub(super) const BININT: u8 = b'J';
    pub(super) const BININT1: u8 = b'K';
    pub(super) const LONG: u8 = b'L';
    pub(super) const BININT2: u8 = b'M';
    pub(super) const NONE: u8 = b'N';
    pub(super) const PERSID: u8 = b'P';
    pub(super) const BINPERSID: u8 = b'Q';
    pub(super) const REDUCE: u8 = b'R';
    pub(super) const STRING: u8 = b'S';
    pub(super) const BINSTRING: u8 = b'T';
    pub(super) const SHORT_BINSTRING: u8 = b'U';
    pub(super) const UNICODE: u8 = b'V';
    pub(super) const BINUNICODE: u8 = b'X';
    pub(super) const APPEND: u8 = b'a';
    pub(super) const BUILD: u8 = b'b';
    pub(super) const GLOBAL: u8 = b'c';
    pub(super) const DICT: u8 = b'd';
    pub(super) const EMPTY_DICT: u8 = b'}';
    pub(super) const APPENDS: u8 = b'e';
    pub(super) const GET: u8 = b'g';
    pub(super) const BINGET: u8 = b'h';
    pub(super) const INST: u8 = b'i';
    pub(super) const LONG_BINGET: u8 = b'j';
    pub(super) const LIST: u8 = b'l';
    pub(super) const EMPTY_LIST: u8 = b']';
    pub(super) const OBJ: u8 = b'o';
    pub(super) const PUT: u8 = b'p';
    pub(super) const BINPUT: u8 = b'q';
    pub(super) const LONG_BINPUT: u8 = b'r';
    pub(super) const SETITEM: u8 = b's';
    pub(super) const TUPLE: u8 = b't';
    pub(super) const EMPTY_TUPLE: u8 = b')';
    pub(super) const SETITEMS: u8 = b'u';
    pub(super) const BINFLOAT: u8 = b'G';
    pub(super) const PROTO: u8 = 0x80;
    pub(super) const NEWOBJ: u8 = 0x81;
    pub(super) const EXT1: u8 = 0x82;
    pub(super) const EXT2: u8 = 0x83;
    pub(super) const EXT4: u8 = 0x84;
    pub(super) const TUPLE1: u8 = 0x85;
    pub(super) const TUPLE2: u8 = 0x86;
    pub(super) const TUPLE3: u8 = 0x87;
    pub(super) const NEWTRUE: u8 = 0x88;
    pub(super) const NEWFALSE: u8 = 0x89;
    pub(super) const LONG1: u8 = 0x8a;
    pub(super) const LONG4: u8 = 0x8b;
    pub(super) const BINBYTES: u8 = b'B';
    pub(super) const SHORT_BINBYTES: u8 = b'C';
    pub(super) const SHORT_BINUNICODE: u8 = 0x8c;
    pub(super) const BINUNICODE8: u8 = 0x8d;
    pub(super) const BINBYTES8: u8 = 0x8e;
    pub(super) const EMPTY_SET: u8 = 0x8f;
    pub(super) const ADDITEMS: u8 = 0x90;
    pub(super) const FROZENSET: u8 = 0x91;
    pub(super) const NEWOBJ_EX: u8 = 0x92;
    pub(super) const STACK_GLOBAL: u8 = 0x93;
    pub(super) const MEMOIZE: u8 = 0x94;
    pub(super) const FRAME: u8 = 0x95;
    pub(super) const BYTEARRAY8: u8 = 0x96;
    pub(super) const NEXT_BUFFER: u8 = 0x97;
    pub(super) const READONLY_BUFFER: u8 = 0x98;
}

/// The highest protocol CPython writes.
const HIGHEST_PROTOCOL: u8 = 5;

impl<'a> Machine<'a> {
    fn new(input: &'a [u8], limits: Limits) -> Self {
        Self {
            input,
            pos: 0,
            at: 0,
            limits,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    /// Runs the pickle to its `STOP` and returns the handle of its result.
    fn run(&mut self) -> Result<Handle, PickleError> {
        loop {
            self.at = self.pos;
            let code = self.byte()?;
            if code == op::STOP {
                let root = self.pop()?;
                if self.pos != self.input.len() {
                    return Err(PickleError::TrailingBytes { offset: self.pos });
                }
                return Ok(root);
            }
            self.step(code)?;
        }
    }

    fn step(&mut self, code: u8) -> Result<(), PickleError> {
        match code {
            // Framing and bookkeeping.
            op::PROTO => {
                if self.byte()? > HIGHEST_PROTOCOL {
                    return Err(PickleError::UnsupportedProtocol { offset: self.at });
                }
            }
            op::FRAME => {
                // Frames only group bytes for buffered readers; check the length is there.
                let len = self.u64()?;
                if !usize::try_from(len).is_ok_and(|len| len <= self.remaining()) {
                    return Err(PickleError::Truncated);
                }
            }
            op::MARK => {
                if self.marks.len() >= self.limits.max_depth {
                    return Err(PickleError::LimitExceeded(Limit::Depth));
                }
                self.marks.push(self.stack.len());
            }
            op::POP => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }

            // Scalars.
            op::NONE => self.push(Node::None)?,
            op::NEWTRUE => self.push(Node::Bool(true))?,
            op::NEWFALSE => self.push(Node::Bool(false))?,
            op::INT => {
                let line = self.line()?;
                let node = match line {
                    b"00" => Node::Bool(false),
                    b"01" => Node::Bool(true),
                    digits => self.decimal(digits)?,
                };
                self.push(node)?;
            }
            op::BININT => {
                let value = i32::from_le_bytes(self.array()?);
                self.push(Node::Int(value.into()))?;
            }
            op::BININT1 => {
                let value = self.byte()?;
                self.push(Node::Int(value.into()))?;
            }
            op::BININT2 => {
                let value = u16::from_le_bytes(self.array()?);
                self.push(Node::Int(value.into()))?;
            }
            op::LONG => {
                let line = self.line()?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let node = self.decimal(digits)?;
                self.push(node)?;
            }
            op::LONG1 => {
                let len = self.byte()?;
                let bytes = self.take(len.into())?;
                self.push(twos_complement(bytes))?;
            }
            op::LONG4 => {
                let len = self.i32_len()?;
                let bytes = self.take(len)?;
                self.push(twos_complement(bytes))?;
            }
            op::FLOAT => {
                let line = self.line()?;
                let value = std::str::from_utf8(line)
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .ok_or(PickleError::BadArgument { offset: self.at })?;
                self.push(Node::Float(value))?;
            }
            op::BINFLOAT => {
                let value = f64::from_be_bytes(self.array()?);
                self.push(Node::Float(value))?;
            }

            // Text and bytes.
            op::STRING => {
                let line = self.line()?;
                let bytes =
                    unquote_string(line).ok_or(PickleError::BadArgument { offset: self.at })?;
                let node = match String::from_utf8(bytes) {
                    Ok(text) => Node::Str(Cow::Owned(text)),
                    Err(error) => Node::Bytes(Cow::Owned(error.into_bytes())),
                };
                self.push(node)?;
            }
            op::BINSTRING => {
                let len = self.i32_len()?;
                let bytes = self.take(len)?;
                self.push(py2_str(bytes))?;
            }
            op::SHORT_BINSTRING => {
                let len = self.byte()?;
                let bytes = self.take(len.into())?;
                self.push(py2_str(bytes))?;
            }
            op::SHORT_BINBYTES => {
                let len = self.byte()?;
                let bytes = self.take(len.into())?;
                self.push(Node::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::BINBYTES => {
                let len = self.u32_len()?;
                let bytes = self.take(len)?;
                self.push(Node::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let len = self.u64_len()?;
                let bytes = self.take(len)?;
                self.push(Node::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::UNICODE => {
                let line = self.line()?;
                let text =
                    raw_unicode_escape(line).ok_or(PickleError::InvalidUtf8 { offset: self.at })?;
                self.push(Node::Str(Cow::Owned(text)))?;
            }
            op::SHORT_BINUNICODE => {
                let len = self.byte()?;
                self.push_utf8(len.into())?;
            }
            op::BINUNICODE => {
                let len = self.u32_len()?;
                self.push_utf8(len)?;
            }
            op::BINUNICODE8 => {
                let len = self.u64_len()?;
                self.push_utf8(len)?;
            }

            // Containers.
            op::EMPTY_DICT => self.push(Node::Dict(Vec::new()))?,
            op::EMPTY_LIST => self.push(Node::List(Vec::new()))?,
            op::EMPTY_TUPLE => self.push(Node::Tuple(Vec::new()))?,
            op::EMPTY_SET => self.push(Node::Set(Vec::new()))?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(&items)?;
                self.push(Node::Dict(pairs))?;
            }
            op::LIST => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items))?;
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push(Node::Set(items))?;
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let count = usize::from(code - op::TUPLE1) + 1;
                let floor = self.floor();
                if self.stack.len() < floor + count {
                    return Err(self.underflow());
                }
                let items = self.stack.split_off(self.stack.len() - count);
                self.push(Node::Tuple(items))?;
            }
            op::APPEND => {
                let value = self.pop()?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::List(items) => items.push(value),
                    Node::Opaque => {}
                    _ => return Err(self.wrong_type("a list")),
                }
            }
            op::APPENDS => {
                let values = self.pop_mark()?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::List(items) => items.extend(values),
                    Node::Opaque => {}
                    _ => return Err(self.wrong_type("a list")),
                }
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::Dict(entries) => entries.push((key, value)),
                    Node::Opaque => {}
                    _ => return Err(self.wrong_type("a dict")),
                }
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(&items)?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::Dict(entries) => entries.extend(pairs),
                    Node::Opaque => {}
                    _ => return Err(self.wrong_type("a dict")),
                }
            }
            op::ADDITEMS => {
                let values = self.pop_mark()?;
                let target = self.top()?;
                match &mut self.nodes[target as usize] {
                    Node::Set(items) => items.extend(values),
                    Node::Opaque => {}
                    _ => return Err(self.wrong_type("a set")),
                }
            }

            // The memo.
            op::PUT => {
                let line = self.line()?;
                let index = self.index(line)?;
                self.memoize(index)?;
            }
            op::BINPUT => {
                let index = self.byte()?;
                self.memoize(index.into())?;
            }
            op::LONG_BINPUT => {
                let index = u32::from_le_bytes(self.array()?);
                self.memoize(index.into())?;
            }
            op::MEMOIZE => {
                let index = self.memo.len() as u64;
                self.memoize(index)?;
            }
            op::GET => {
                let line = self.line()?;
                let index = self.index(line)?;
                self.recall(index)?;
            }
            op::BINGET => {
                let index = self.byte()?;
                self.recall(index.into())?;
            }
            op::LONG_BINGET => {
                let index = u32::from_le_bytes(self.array()?);
                self.recall(index.into())?;
            }

            // Imports and calls: consume the operands, resolve nothing, leave a marker.
            op::GLOBAL => {
                self.line()?;
                self.line()?;
                self.push(Node::Opaque)?;
            }
            op::INST => {
                self.line()?;
                self.line()?;
                self.pop_mark()?;
                self.push(Node::Opaque)?;
            }
            op::OBJ => {
                // The class, then its arguments.
                if self.pop_mark()?.is_empty() {
                    return Err(self.underflow());
                }
                self.push(Node::Opaque)?;
            }
            op::STACK_GLOBAL | op::REDUCE | op::NEWOBJ => {
                self.pop()?;
                self.pop()?;
                self.push(Node::Opaque)?;
            }
            op::NEWOBJ_EX => {
                self.pop()?;
                self.pop()?;
                self.pop()?;
                self.push(Node::Opaque)?;
            }
            op::BUILD => {
                // `obj.__setstate__(state)` or `obj.__dict__.update(state)`: a call.
                self.pop()?;
                let target = self.top()?;
                self.nodes[target as usize] = Node::Opaque;
            }
            op::EXT1 => {
                self.take(1)?;
                self.push(Node::Opaque)?;
            }
            op::EXT2 => {
                self.take(2)?;
                self.push(Node::Opaque)?;
            }
            op::EXT4 => {
                self.take(4)?;
                self.push(Node::Opaque)?;
            }
            op::PERSID => {
                self.line()?;
                self.push(Node::Opaque)?;
            }
            op::BINPERSID => {
                self.pop()?;
                self.push(Node::Opaque)?;
            }

            op::NEXT_BUFFER | op::READONLY_BUFFER => {
                return Err(PickleError::OutOfBandBuffer { offset: self.at });
            }
            _ => return Err(PickleError::UnknownOpcode { offset: self.at }),
        }
        Ok(())
    }

    // --- input ---

    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next `len` bytes; `len` is checked before anything is sliced.
    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        if len > self.remaining() {
            return Err(PickleError::Truncated);
        }
        let bytes = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        let [byte] = self.array()?;
        Ok(byte)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` length, as a `usize` for [`Self::take`].
    fn u32_len(&mut self) -> Result<usize, PickleError> {
        let len = u32::from_le_bytes(self.array()?);
        usize::try_from(len).map_err(|_| PickleError::Truncated)
    }

    /// A `u64` length: one beyond `usize` cannot be in the input either.
    fn u64_len(&mut self) -> Result<usize, PickleError> {
        let len = self.u64()?;
        usize::try_from(len).map_err(|_| PickleError::Truncated)
    }

    /// A signed 32-bit length, which must not be negative.
    fn i32_len(&mut self) -> Result<usize, PickleError> {
        let len = i32::from_le_bytes(self.array()?);
        usize::try_from(len).map_err(|_| PickleError::BadArgument { offset: self.at })
    }

    /// A protocol 0 argument: the bytes up to the next newline, which is consumed.
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated)?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// A decimal integer literal (`INT`, `LONG`): an optional sign, then digits.
    fn decimal(&self, text: &[u8]) -> Result<Node<'a>, PickleError> {
        let bad = PickleError::BadArgument { offset: self.at };
        let (negative, digits) = match text {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let mut value: i128 = 0;
        for &digit in digits {
            let digit = i128::from(digit - b'0');
            let next = value.checked_mul(10).and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            });
            match next {
                Some(next) => value = next,
                None => return Ok(Node::BigInt),
            }
        }
        Ok(integer(value))
    }

    /// A memo index from a protocol 0 `PUT` or `GET` line.
    fn index(&self, line: &[u8]) -> Result<u64, PickleError> {
        let bad = PickleError::BadArgument { offset: self.at };
        if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        line.iter().try_fold(0_u64, |acc, &digit| {
            acc.checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit - b'0')))
                .ok_or(bad.clone())
        })
    }

    // --- the stack ---

    /// Adds a new object to the arena and pushes it.
    fn push(&mut self, node: Node<'a>) -> Result<(), PickleError> {
        if self.nodes.len() >= self.limits.max_values {
            return Err(PickleError::LimitExceeded(Limit::Values));
        }
        let handle = Handle::try_from(self.nodes.len())
            .map_err(|_| PickleError::LimitExceeded(Limit::Values))?;
        self.nodes.push(node);
        self.stack.push(handle);
        Ok(())
    }

    fn push_utf8(&mut self, len: usize) -> Result<(), PickleError> {
        let bytes = self.take(len)?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| PickleError::InvalidUtf8 { offset: self.at })?;
        self.push(Node::Str(Cow::Borrowed(text)))
    }

    /// The stack length at the innermost mark: nothing below it may be popped.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Handle, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.underflow());
        }
        self.stack.pop().ok_or(self.underflow())
    }

    fn top(&self) -> Result<Handle, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.underflow());
        }
        self.stack.last().copied().ok_or(self.underflow())
    }

    /// Pops everything above the innermost mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Handle>, PickleError> {
        let mark = self.marks.pop().ok_or(self.underflow())?;
        Ok(self.stack.split_off(mark))
    }

    /// Pairs up `DICT` and `SETITEMS` items.
    fn pairs(&self, items: &[Handle]) -> Result<Vec<(Handle, Handle)>, PickleError> {
        let pairs = items.chunks_exact(2);
        if !pairs.remainder().is_empty() {
            return Err(self.wrong_type("key and value pairs"));
        }
        Ok(pairs.map(|pair| (pair[0], pair[1])).collect())
    }

    fn memoize(&mut self, index: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn recall(&mut self, index: u64) -> Result<(), PickleError> {
        let handle = *self
            .memo
            .get(&index)
            .ok_or(PickleError::MissingMemo { offset: self.at })?;
        self.stack.push(handle);
        Ok(())
    }

    fn underflow(&self) -> PickleError {
        PickleError::StackUnderflow { offset: self.at }
    }

    fn wrong_type(&self, expected: &'static str) -> PickleError {
        PickleError::WrongType {
            offset: self.at,
            expected,
        }
    }
}

/// A Python 2 `str` (a byte string): text when it is UTF-8, else bytes.
fn py2_str(bytes: &[u8]) -> Node<'_> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Node::Str(Cow::Borrowed(text)),
        Err(_) => Node::Bytes(Cow::Borrowed(bytes)),
    }
}

/// Classifies an integer by the JSON number that holds it.
fn integer(value: i128) -> Node<'static> {
    if let Ok(value) = i64::try_from(value) {
        Node::Int(value)
    } else if let Ok(value) = u64::try_from(value) {
        Node::UInt(value)
    } else {
        Node::BigInt
    }
}

/// A little-endian two's complement integer (`LONG1`, `LONG4`); empty is zero.
fn twos_complement(bytes: &[u8]) -> Node<'static> {
    let Some(&last) = bytes.last() else {
        return Node::Int(0);
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Drop sign-extension bytes that do not change the value.
    let mut len = bytes.len();
    while len > 1 && bytes[len - 1] == fill && (bytes[len - 2] & 0x80 != 0) == negative {
        len -= 1;
    }
    if len > 16 {
        return Node::BigInt;
    }
    let mut buf = [fill; 16];
    buf[..len].copy_from_slice(&bytes[..len]);
    integer(i128::from_le_bytes(buf))
}

/// A protocol 0 `STRING` argument: a quoted Python 2 `repr` of a byte string, unescaped
/// as CPython's `codecs.escape_decode` does. `None` when malformed.
fn unquote_string(line: &[u8]) -> Option<Vec<u8>> {
    let inner = match line {
        [open @ (b'\'' | b'"'), inner @ .., close] if open == close => inner,
        _ => return None,
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied().peekable();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        let escaped = bytes.next()?;
        match escaped {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(escaped),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                // Up to three octal digits; CPython keeps the low byte of `\777`.
                let mut value = u32::from(escaped - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&digit @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(digit - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let high = hex_digit(bytes.next()?)?;
                let low = hex_digit(bytes.next()?)?;
                out.push((high << 4) | low);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// A protocol 0 `UNICODE` argument, decoded as CPython's `raw-unicode-escape`: bytes are
/// Latin-1 characters except `\uXXXX` and `\UXXXXXXXX`. `None` when an escape is
/// malformed or names a surrogate or a value beyond Unicode.
fn raw_unicode_escape(line: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let mut bytes = line.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(char::from(byte));
            continue;
        }
        let digits = match bytes.next() {
            None => {
                out.push('\\');
                break;
            }
            Some(b'u') => 4,
            Some(b'U') => 8,
            Some(other) => {
                // Backslashes pair up: `\\u0041` is a backslash, another, then `u0041`.
                out.push('\\');
                out.push(char::from(other));
                continue;
            }
        };
        let mut code: u32 = 0;
        for _ in 0..digits {
            code = (code << 4) | u32::from(hex_digit(bytes.next()?)?);
        }
        out.push(char::from_u32(code)?);
    }
    Some(out)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

// === conversion to JSON ===

/// Walks the object graph from the root with an explicit stack, counting every value it
/// emits (memo references included) against the limits.
struct Converter<'n, 'a> {
    nodes: &'n [Node<'a>],
    max_depth: usize,
    values_left: usize,
    bytes_left: usize,
}

/// A container being converted.
enum Frame<'n> {
    Array {
        items: &'n [Handle],
        next: usize,
        out: Vec<Value>,
    },
    Object {
        entries: &'n [(Handle, Handle)],
        next: usize,
        out: Map<String, Value>,
        /// The key of the value being converted.
        key: String,
    },
}

impl<'n, 'a> Converter<'n, 'a> {
    fn new(nodes: &'n [Node<'a>], limits: Limits) -> Self {
        Self {
            nodes,
            max_depth: limits.max_depth,
            values_left: limits.max_values,
            bytes_left: limits.max_bytes,
        }
    }

    fn convert(mut self, root: Handle) -> Result<Value, PickleError> {
        let nodes = self.nodes;
        let Node::Dict(entries) = &nodes[root as usize] else {
            return Err(PickleError::NotADict);
        };
        self.spend_value()?;
        if self.max_depth == 0 {
            return Err(PickleError::LimitExceeded(Limit::Depth));
        }
        let mut frames = vec![Frame::object(entries)];
        loop {
            let Some(frame) = frames.last_mut() else {
                return Err(PickleError::NotADict);
            };
            match self.next_child(frame)? {
                Some(handle) => {
                    self.spend_value()?;
                    let child = match &nodes[handle as usize] {
                        Node::List(items) | Node::Tuple(items) | Node::Set(items) => {
                            Some(Frame::array(items))
                        }
                        Node::Dict(entries) => Some(Frame::object(entries)),
                        _ => None,
                    };
                    match child {
                        Some(child) => {
                            if frames.len() >= self.max_depth {
                                return Err(PickleError::LimitExceeded(Limit::Depth));
                            }
                            frames.push(child);
                        }
                        None => {
                            let value = self.scalar(handle)?;
                            frame.attach(value);
                        }
                    }
                }
                None => {
                    let Some(done) = frames.pop() else {
                        return Err(PickleError::NotADict);
                    };
                    let value = done.finish();
                    match frames.last_mut() {
                        Some(parent) => parent.attach(value),
                        None => return Ok(value),
                    }
                }
            }
        }
    }

    /// The next value of `frame` to convert; for a dict, sets the frame's key first and
    /// skips entries whose key is not a string or an integer.
    fn next_child(&mut self, frame: &mut Frame<'n>) -> Result<Option<Handle>, PickleError> {
        match frame {
            Frame::Array { items, next, .. } => {
                let child = items.get(*next).copied();
                *next += 1;
                Ok(child)
            }
            Frame::Object {
                entries, next, key, ..
            } => {
                while let Some(&(key_handle, value)) = entries.get(*next) {
                    *next += 1;
                    // Every entry costs a value, so skipped ones are bounded too.
                    self.spend_value()?;
                    if let Some(text) = self.key(key_handle) {
                        // Counted before it is copied.
                        self.spend_bytes(text.len())?;
                        *key = text.into_owned();
                        return Ok(Some(value));
                    }
                }
                Ok(None)
            }
        }
    }

    /// A dict key as JSON has it, borrowed when it is a `str`.
    fn key(&self, handle: Handle) -> Option<Cow<'n, str>> {
        let nodes = self.nodes;
        match &nodes[handle as usize] {
            Node::Str(text) => Some(Cow::Borrowed(text)),
            Node::Int(value) => Some(Cow::Owned(value.to_string())),
            Node::UInt(value) => Some(Cow::Owned(value.to_string())),
            _ => None,
        }
    }

    fn scalar(&mut self, handle: Handle) -> Result<Value, PickleError> {
        Ok(match &self.nodes[handle as usize] {
            Node::Bool(value) => Value::Bool(*value),
            Node::Int(value) => Value::from(*value),
            Node::UInt(value) => Value::from(*value),
            Node::Float(value) => Number::from_f64(*value).map_or(Value::Null, Value::Number),
            Node::Str(text) => {
                self.spend_bytes(text.len())?;
                Value::String(text.to_string())
            }
            Node::Bytes(bytes) => {
                self.spend_bytes(bytes.len())?;
                std::str::from_utf8(bytes)
                    .map_or(Value::Null, |text| Value::String(text.to_owned()))
            }
            Node::None
            | Node::BigInt
            | Node::Opaque
            | Node::List(_)
            | Node::Tuple(_)
            | Node::Set(_)
            | Node::Dict(_) => Value::Null,
        })
    }

    fn spend_value(&mut self) -> Result<(), PickleError> {
        self.values_left = self
            .values_left
            .checked_sub(1)
            .ok_or(PickleError::LimitExceeded(Limit::Values))?;
        Ok(())
    }

    fn spend_bytes(&mut self, len: usize) -> Result<(), PickleError> {
        self.bytes_left = self
            .bytes_left
            .checked_sub(len)
            .ok_or(PickleError::LimitExceeded(Limit::Bytes))?;
        Ok(())
    }
}

// === impl Frame ===

impl<'n> Frame<'n> {
    fn array(items: &'n [Handle]) -> Self {
        Self::Array {
            items,
            next: 0,
            out: Vec::new(),
        }
    }

    fn object(entries: &'n [(Handle, Handle)]) -> Self {
        Self::Object {
            entries,
            next: 0,
            out: Map::new(),
            key: String::new(),
        }
    }

    fn attach(&mut self, value: Value) {
        match self {
            Self::Array { out, .. } => out.push(value),
            Self::Object { out, key, .. } => {
                out.insert(std::mem::take(key), value);
            }
        }
    }

    fn finish(self) -> Value {
        match self {
            Self::Array { out, .. } => Value::Array(out),
            Self::Object { out, .. } => Value::Object(out),
        }
    }
}

#[cfg(test)]
mod tests;
