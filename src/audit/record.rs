//! The audit record: one type per `kind`, and the one encoder that turns a record into the
//! canonical bytes the chain hashes (`docs/audit-format.md`).

#[cfg(test)]
mod tests;
