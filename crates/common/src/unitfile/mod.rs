//! systemd's unit-file format, as `.nspawn` and `.network` files use it, in
//! three layers: [`lines`] (the line syntax: sections, assignments,
//! comments, continuations), [`table`] (a format as a static key table, and
//! the parser that drives the lines through it) and [`values`] (the value
//! parsers keys share: booleans, word lists, time spans, sizes).
//!
//! Files are untrusted input: nothing here panics; a NUL byte, an overlong
//! or non-UTF-8 line is an error naming its line.

pub mod lines;
pub mod table;
pub mod values;

pub use lines::{
    decode, outside_of_any_section, parse, split_assignment, Item, SyntaxError, LONG_LINE_MAX,
    WHITESPACE,
};
pub use values::parse_boolean;
