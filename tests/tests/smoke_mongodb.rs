//! The MongoDB-compatible server started by `scripts/services` is real: a unique index on `eventId`
//! refuses a duplicate insert with error 11000, which the MongoDB sink relies on.

use audit_tests::{mongodb_uri, unique_name, unreachable};
use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::IndexOptions;
use mongodb::{Client, IndexModel};

#[tokio::test]
async fn mongodb_unique_index_refuses_a_duplicate_event_id_with_11000() {
    let client = Client::with_uri_str(mongodb_uri())
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("MongoDB", &mongodb_uri(), e)));
    let collection = client.database("audit_smoke").collection::<Document>(&unique_name("events"));
    collection
        .create_index(
            IndexModel::builder()
                .keys(doc! {"eventId": 1})
                .options(IndexOptions::builder().unique(true).build())
                .build(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable("MongoDB", &mongodb_uri(), e)));

    collection.insert_one(doc! {"eventId": "e1", "action": "user.login"}).await.unwrap();
    let err = collection.insert_one(doc! {"eventId": "e1", "action": "other"}).await.unwrap_err();
    let code = match *err.kind {
        ErrorKind::Write(WriteFailure::WriteError(ref w)) => Some(w.code),
        _ => None,
    };
    assert_eq!(code, Some(11000), "{err}");

    let stored = collection.find_one(doc! {"eventId": "e1"}).await.unwrap().expect("the first insert is kept");
    assert_eq!(stored.get_str("action").unwrap(), "user.login");
    collection.drop().await.unwrap();
}
