//! The PostgreSQL started by `scripts/services` is real: rows go in and come back, and a unique index
//! refuses a duplicate with SQLSTATE 23505, which the PostgreSQL sink relies on.

use audit_tests::{database_url, unreachable};
use sqlx::{Connection, PgConnection, Row};

#[tokio::test]
async fn postgres_stores_rows_and_refuses_duplicates_under_a_unique_index() {
    let mut conn = PgConnection::connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("PostgreSQL", &database_url(), e)));
    // A temporary table lives in this session only, so parallel runs cannot collide.
    sqlx::query("CREATE TEMPORARY TABLE smoke_events (event_id text UNIQUE NOT NULL, body jsonb NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();

    let insert = "INSERT INTO smoke_events (event_id, body) VALUES ($1, $2::jsonb)";
    sqlx::query(insert).bind("e1").bind(r#"{"action":"user.login"}"#).execute(&mut conn).await.unwrap();
    let row = sqlx::query("SELECT body->>'action' AS action FROM smoke_events WHERE event_id = $1")
        .bind("e1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("action"), "user.login");

    let err = sqlx::query(insert).bind("e1").bind("{}").execute(&mut conn).await.unwrap_err();
    let code = err.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("23505"), "{err}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM smoke_events").fetch_one(&mut conn).await.unwrap();
    assert_eq!(count, 1, "the duplicate was not stored");
}
