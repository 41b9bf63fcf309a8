//! The local Blocks Network (devnet). Being written.
