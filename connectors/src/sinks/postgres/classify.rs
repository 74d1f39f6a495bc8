//! Whose fault a database error is, from its SQLSTATE: a record's (the
//! sink finds which one and the runtime dead-letters it), a passing
//! condition (retried with backoff), or the connector's (stopped).

use ferry::error::ConnectorError;

/// What to do about a database error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Class 22 (data exception), 23 (integrity constraint violation) or
    /// 21 (cardinality): some record does not fit the table.
    Record,
    /// Connection trouble, serialization failure, deadlock, lock timeout,
    /// resources, an administrator's shutdown: try again later.
    Transient,
    /// Anything else (the table dropped, permission denied, ...): retrying
    /// will not help, and no record is to blame.
    Connector,
}

/// The fault of a SQLSTATE (`None`: no answer from the server at all).
pub fn fault_of(code: Option<&str>) -> Fault {
    let Some(code) = code else {
        return Fault::Transient;
    };
    match code.get(..2) {
        Some("21" | "22" | "23") => Fault::Record,
        // A trigger's `RAISE EXCEPTION`: the row's validation refused it.
        _ if code == "P0001" => Fault::Record,
        Some("08" | "53" | "57" | "58") => Fault::Transient,
        _ if matches!(code, "40001" | "40P01" | "55P03" | "55006") => Fault::Transient,
        Some("40") => Fault::Transient,
        _ => Fault::Connector,
    }
}

/// The fault of an error from tokio-postgres.
pub fn fault(e: &tokio_postgres::Error) -> Fault {
    fault_of(e.code().map(tokio_postgres::error::SqlState::code))
}

/// The server's message with its detail, column and constraint, if any.
pub fn describe(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    if let Some(c) = db.column() {
        text.push_str(&format!(", column `{c}`"));
    }
    if let Some(c) = db.constraint() {
        text.push_str(&format!(", constraint `{c}`"));
    }
    if let Some(d) = db.detail() {
        text.push_str(&format!(": {d}"));
    }
    text
}

/// A connector-wide error for `e`, met while doing `what` on `table`.
pub fn connector_error(what: &str, table: &str, e: &tokio_postgres::Error) -> ConnectorError {
    let message = format!("postgres table `{table}`: {what}: {}", describe(e));
    match fault(e) {
        Fault::Transient => ConnectorError::external(message).for_connector(),
        Fault::Record | Fault::Connector => ConnectorError::user(message).for_connector(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(fault_of(Some("23505")), Fault::Record); // unique
        assert_eq!(fault_of(Some("23514")), Fault::Record); // check
        assert_eq!(fault_of(Some("23502")), Fault::Record); // not null
        assert_eq!(fault_of(Some("23503")), Fault::Record); // foreign key
        assert_eq!(fault_of(Some("22P02")), Fault::Record); // bad input syntax
        assert_eq!(fault_of(Some("22001")), Fault::Record); // too long for varchar(n)
        assert_eq!(fault_of(Some("P0001")), Fault::Record); // a trigger's RAISE
        assert_eq!(fault_of(Some("40001")), Fault::Transient); // serialization
        assert_eq!(fault_of(Some("40P01")), Fault::Transient); // deadlock
        assert_eq!(fault_of(Some("08006")), Fault::Transient); // connection
        assert_eq!(fault_of(Some("57P01")), Fault::Transient); // admin shutdown
        assert_eq!(fault_of(None), Fault::Transient); // no answer
        assert_eq!(fault_of(Some("42P01")), Fault::Connector); // no table
        assert_eq!(fault_of(Some("42501")), Fault::Connector); // permission
    }
}
