//! Snapshot and restore of one QEMU domain (filled in by the snapshot work).
