//! TEMPORARY STUB (the export helper replaces this file).
#![allow(dead_code, missing_debug_implementations)]
use std::io::{self, Write};
use super::{ExportEntry, ExportMeta, ExportSummary, ExportWriter};
pub struct GlDetailWriter<W> { out: W }
impl<W: Write + Send> GlDetailWriter<W> { pub fn new(out: W) -> Self { GlDetailWriter { out } } }
impl<W: Write + Send> ExportWriter for GlDetailWriter<W> {
    fn begin(&mut self, _m: &ExportMeta) -> io::Result<()> { Err(io::Error::other("stub")) }
    fn entry(&mut self, _e: &ExportEntry) -> io::Result<()> { Err(io::Error::other("stub")) }
    fn finish(&mut self) -> io::Result<ExportSummary> { Err(io::Error::other("stub")) }
}
