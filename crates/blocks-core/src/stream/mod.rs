//! Streams: wire frames, multipart, outbound batching and the inbound reorder buffer.

pub mod bundle;
pub mod frames;
pub mod io;
pub mod reorder;

pub use bundle::{Bundler, Write};
pub use frames::{Chunk, Format, Inbound, Item, Offer, Reassembler};
pub use io::{stream_uuid, ReaderEvent, StreamReader, StreamWriter, WriterOptions};
pub use reorder::Reorder;
