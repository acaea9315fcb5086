//! The MongoDB store's reader: `<collection>_checkpoints`, then the events in `(chain, seq)`
//! order, each checked to be what the sink writes of the canonical event.

use std::time::Duration;

use futures::TryStreamExt as _;
use serde_json::Value;

use crate::stores::read::{
    missing_link_field, Each, ReadContext as _, ReadError, ReadFilter, Stored, Unread, UnreadKind,
};

pub(super) async fn read_mongo<E: From<ReadError>>(
    uri: &str,
    database: &str,
    collection: &str,
    filter: &ReadFilter,
    each: &mut Each<'_, E>,
) -> Result<(), E> {
    use mongodb::bson::{doc, Document};
    let mut options = mongodb::options::ClientOptions::parse(uri).await.context("parsing the MongoDB URI")?;
    options.server_selection_timeout = Some(Duration::from_secs(30));
    let client = mongodb::Client::with_options(options).context("MongoDB client")?;
    let db = client.database(database);
    let checkpoints = db.collection::<Document>(&format!("{collection}_checkpoints"));
    let query = match &filter.chain {
        Some(chain) => doc! { "checkpoint.chain": chain },
        None => doc! {},
    };
    // Read before the events; no order needed (and none asked of the server: nothing indexes it).
    let mut cursor = checkpoints
        .find(query)
        .await
        .with_context(|| format!("reading {database}.{collection}_checkpoints from MongoDB"))?;
    while let Some(document) =
        cursor.try_next().await.with_context(|| format!("reading {database}.{collection}_checkpoints from MongoDB"))?
    {
        let origin =
            || format!("{collection}_checkpoints {}", document.get("_id").map(ToString::to_string).unwrap_or_default());
        let stored = match document.get_document("checkpoint") {
            Ok(inner) => {
                Stored::checkpoint(mongodb::bson::Bson::Document(inner.clone()).into_relaxed_extjson(), origin)
            }
            Err(_) => Stored::BadCheckpoint { origin: origin(), reason: "no checkpoint object".into() },
        };
        each(stored)?;
    }
    let events = db.collection::<Document>(collection);
    let query = match &filter.chain {
        Some(chain) => doc! { "integrity.chain": chain },
        None => doc! {},
    };
    let mut cursor = events
        .find(query)
        .sort(doc! { "integrity.chain": 1, "integrity.seq": 1 })
        .await
        .with_context(|| format!("reading {database}.{collection} from MongoDB"))?;
    while let Some(mut document) =
        cursor.try_next().await.with_context(|| format!("reading {database}.{collection} from MongoDB"))?
    {
        let raw_id = document.remove("_id");
        let id = raw_id.as_ref().map(ToString::to_string).unwrap_or_default();
        let event: Value = mongodb::bson::Bson::Document(document).into_relaxed_extjson();
        match missing_link_field(&event) {
            None => {
                let location = || format!("{collection} document {id}");
                if let Some(why) = not_as_written(&event, &mut String::new()) {
                    let reason = format!(
                        "the document is not what the sink writes of the canonical event ({why}): readers of the \
                         collection may see other content than what was hashed; the event is verified as it converts"
                    );
                    each(Unread::about(UnreadKind::NonCanonical, location(), &event, reason))?;
                }
                let event_id = event.get("eventId").and_then(Value::as_str);
                if raw_id.as_ref().and_then(|id| id.as_str()) != event_id {
                    let reason = format!("_id {id} ≠ event's eventId {event_id:?}: lookups by _id see another event");
                    each(Unread::about(UnreadKind::ColumnMismatch, location(), &event, reason))?;
                }
                each(Stored::Event(event))?;
            }
            Some(field) => {
                let reason = format!("an event without a valid {field}: not verified");
                each(Unread::event(format!("{collection} document {id}"), &event, reason))?;
            }
        }
    }
    Ok(())
}

/// What in a MongoDB event document the sink never writes of a canonical event: a member whose
/// name starts with `$` (extended JSON reads it as a type: `$numberLong`, `$date`...; and every BSON
/// type the sink does not write converts to one), or a whole number stored as a double (the sink
/// writes the integers of canonical JSON as integers: a double is a number alias). `path` is
/// scratch space for the member's path. Duplicate member names cannot be seen: the driver keeps
/// the last.
fn not_as_written(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                if key.starts_with('$') {
                    return Some(format!("a member named {key:?} at {path}"));
                }
                let found = not_as_written(v, path);
                path.truncate(len);
                if found.is_some() {
                    return found;
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(|v| not_as_written(v, path)),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.2e18)
            .map(|f| format!("the whole number {f} stored as a double at {path}")),
        _ => None,
    }
}
