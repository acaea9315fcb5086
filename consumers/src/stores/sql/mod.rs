//! What the two SQL stores (PostgreSQL, SQLite) share: the row they write of an event
//! ([`row`]), and how their readers read their tables back ([`read`]).

pub(crate) mod read;
pub(crate) mod row;
