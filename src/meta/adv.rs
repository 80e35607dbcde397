//! The on-disk META partition format (Talos ADV).
