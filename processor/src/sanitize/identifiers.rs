//! The identifier rule: characters that hide or reorder text where an identifier is shown refuse
//! an event in the fields that name its tenant, action and kinds, and are replaced (with a
//! warning) in the actor's and target's ids.

use serde_json::{Map, Value};

use super::REPLACEMENT;

/// The name of a character that hides or reorders text where an identifier is shown (a terminal,
/// a log line, a table cell, a web page), or `None` for any other character:
/// * C0 controls, DEL and C1 controls (U+0000–U+001F, U+007F–U+009F): line breaks forge log lines,
///   escape sequences drive terminals;
/// * bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069): an override
///   shows `resu` for `user`, embeddings and isolates reorder what follows them;
/// * invisible characters: zero-width (U+200B–U+200D, U+2060, U+FEFF), the soft hyphen (U+00AD),
///   U+180E, the invisible operators (U+2061–U+2064), the deprecated format controls
///   (U+206A–U+206F) and the tag characters (U+E0000–U+E007F, an invisible copy of ASCII used to
///   smuggle text): `ad\u{200B}min` shows as `admin`;
/// * line and paragraph separators (U+2028, U+2029): line breaks to JavaScript and many viewers.
///
/// Other text (`Zürich`, `東京`, `محمد`, a no-break space, emoji with their variation selectors)
/// is ordinary and stays.
pub fn hidden_character(c: char) -> Option<&'static str> {
    Some(match c {
        '\u{0}' => "NULL",
        '\u{9}' => "CHARACTER TABULATION",
        '\u{A}' => "LINE FEED",
        '\u{D}' => "CARRIAGE RETURN",
        '\u{1B}' => "ESCAPE",
        '\u{7F}' => "DELETE",
        '\u{85}' => "NEXT LINE",
        '\u{0}'..='\u{1F}' | '\u{80}'..='\u{9F}' => "<control>",
        '\u{AD}' => "SOFT HYPHEN",
        '\u{61C}' => "ARABIC LETTER MARK",
        '\u{180E}' => "MONGOLIAN VOWEL SEPARATOR",
        '\u{200B}' => "ZERO WIDTH SPACE",
        '\u{200C}' => "ZERO WIDTH NON-JOINER",
        '\u{200D}' => "ZERO WIDTH JOINER",
        '\u{200E}' => "LEFT-TO-RIGHT MARK",
        '\u{200F}' => "RIGHT-TO-LEFT MARK",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        '\u{202A}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202B}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202C}' => "POP DIRECTIONAL FORMATTING",
        '\u{202D}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202E}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2060}' => "WORD JOINER",
        '\u{2061}' => "FUNCTION APPLICATION",
        '\u{2062}' => "INVISIBLE TIMES",
        '\u{2063}' => "INVISIBLE SEPARATOR",
        '\u{2064}' => "INVISIBLE PLUS",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{206A}'..='\u{206F}' => "<deprecated format control>",
        '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE",
        '\u{E0000}'..='\u{E007F}' => "<tag character>",
        _ => return None,
    })
}

/// The first hidden character of `s` ([`hidden_character`]) and its position in characters,
/// counting from 1.
pub fn first_hidden_character(s: &str) -> Option<(usize, char)> {
    // Nearly every identifier is printable ASCII: one pass over the bytes decides.
    if s.bytes().all(|b| (0x20..0x7F).contains(&b)) {
        return None;
    }
    s.chars().enumerate().find(|(_, c)| hidden_character(*c).is_some()).map(|(i, c)| (i + 1, c))
}

/// `U+202E RIGHT-TO-LEFT OVERRIDE at character 3`.
fn describe(position: usize, c: char) -> String {
    let name = hidden_character(c).unwrap_or("character");
    format!("U+{:04X} {name} at character {position}", u32::from(c))
}

/// An identifier the rule refuses: a hidden character in a field that names the tenant, the
/// action, or the kind of actor or target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path} contains {}: invisible and reordering characters are refused in context.tenantId, action, actor.type and target.type",
    describe(*.position, *.character)
)]
pub struct HiddenCharacter {
    /// The field, e.g. `context.tenantId`.
    pub path: &'static str,
    /// Position of the first hidden character, in characters from 1.
    pub position: usize,
    /// The character.
    pub character: char,
}

/// Fields that identify the event's tenant, action and kinds: no safe rewrite exists (a changed
/// tenantId files the event under another tenant, or under none), so a hidden character refuses
/// the event. They are set by the application, never by its users, so one there is a bug or an
/// attack to look at.
const REFUSED: [(&str, &str, &str); 4] = [
    ("context", "tenantId", "context.tenantId"),
    ("", "action", "action"),
    ("actor", "type", "actor.type"),
    ("target", "type", "target.type"),
];

/// Fields that often carry what an end user chose (a user name, a file name): refusing would let
/// anyone who can pick a name keep their actions out of the log, so hidden characters are
/// replaced by U+FFFD instead. Replaced, not removed: removing would turn `ad\u{200B}min` into
/// another identity, `admin`.
const NORMALIZED: [(&str, &str, &str); 2] = [("actor", "id", "actor.id"), ("target", "id", "target.id")];

/// Applies the identifier rule to a decoded event in place: a hidden character
/// ([`hidden_character`]) in `context.tenantId`, `action`, `actor.type` or `target.type` refuses
/// it; in `actor.id` and `target.id` each one is replaced by U+FFFD, with a warning naming the
/// path and the first character replaced. The same input always gives the same output. Fields
/// that are not strings are left to the contract's validation.
pub fn identifier_hygiene(event: &mut Value) -> Result<Vec<String>, HiddenCharacter> {
    let mut warnings = Vec::new();
    let Value::Object(map) = event else { return Ok(warnings) };
    let field = |map: &Map<String, Value>, parent: &str, name: &str| -> Option<(usize, char)> {
        let holder = if parent.is_empty() { Some(map) } else { map.get(parent)?.as_object() };
        first_hidden_character(holder?.get(name)?.as_str()?)
    };
    for (parent, name, path) in REFUSED {
        if let Some((position, character)) = field(map, parent, name) {
            return Err(HiddenCharacter { path, position, character });
        }
    }
    for (parent, name, path) in NORMALIZED {
        let Some((position, first)) = field(map, parent, name) else { continue };
        let Some(Value::String(s)) = map.get_mut(parent).and_then(|p| p.get_mut(name)) else { continue };
        let mut replaced = 0;
        *s = s
            .chars()
            .map(|c| match hidden_character(c) {
                Some(_) => {
                    replaced += 1;
                    REPLACEMENT
                }
                None => c,
            })
            .collect();
        let first = describe(position, first);
        warnings.push(if replaced == 1 {
            format!("{path}: {first} replaced by U+FFFD (invisible and reordering characters are not kept in identifiers)")
        } else {
            format!(
                "{path}: {replaced} invisible or reordering characters replaced by U+FFFD, the first {first} (they are not kept in identifiers)"
            )
        });
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_hiding_or_reordering_character_is_named_and_ordinary_text_is_not() {
        let hidden = [
            '\u{0}',
            '\u{7}',
            '\u{9}',
            '\u{A}',
            '\u{D}',
            '\u{1B}',
            '\u{1F}',
            '\u{7F}',
            '\u{80}',
            '\u{85}',
            '\u{9F}',
            '\u{AD}',
            '\u{61C}',
            '\u{180E}',
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2028}',
            '\u{2029}',
            '\u{202A}',
            '\u{202B}',
            '\u{202C}',
            '\u{202D}',
            '\u{202E}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{206F}',
            '\u{FEFF}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
        ];
        for c in hidden {
            assert!(hidden_character(c).is_some(), "U+{:04X}", u32::from(c));
            assert_eq!(first_hidden_character(&format!("ab{c}d{c}")), Some((3, c)), "U+{:04X}", u32::from(c));
        }
        // Near misses: the neighbours of each range, spaces that show, and ordinary scripts.
        let ordinary = [
            ' ',
            '~',
            '\u{A0}',
            '\u{A1}',
            '\u{AC}',
            '\u{AE}',
            '\u{61B}',
            '\u{200A}',
            '\u{2010}',
            '\u{2027}',
            '\u{202F}',
            '\u{2065}',
            '\u{2070}',
            '\u{FE0F}',
            '\u{FEFE}',
            '\u{FFFD}',
            '\u{E0080}',
            'ü',
            '東',
            'م',
            'א',
        ];
        for c in ordinary {
            assert_eq!(hidden_character(c), None, "U+{:04X}", u32::from(c));
        }
        for s in ["tenant-a", "Zürich", "東京", "محمد", "שלום", "👩\u{200D}💻"] {
            let expected = s.contains('\u{200D}').then_some((2, '\u{200D}'));
            assert_eq!(first_hidden_character(s), expected, "{s}");
        }
    }

    #[test]
    fn a_hidden_character_in_the_tenant_action_or_a_kind_refuses_the_event_naming_field_and_code_point() {
        let base = json!({"action": "user.login", "actor": {"type": "user", "id": "u"},
                          "target": {"type": "doc", "id": "d"}, "context": {"tenantId": "acme"}});
        let cases = [
            (
                "/context/tenantId",
                "ac\u{202E}me",
                "context.tenantId contains U+202E RIGHT-TO-LEFT OVERRIDE at character 3",
            ),
            ("/context/tenantId", "acme\u{0}", "context.tenantId contains U+0000 NULL at character 5"),
            (
                "/context/tenantId",
                "\u{2066}acme",
                "context.tenantId contains U+2066 LEFT-TO-RIGHT ISOLATE at character 1",
            ),
            ("/action", "user.login\nuser.logout", "action contains U+000A LINE FEED at character 11"),
            ("/actor/type", "us\u{200B}er", "actor.type contains U+200B ZERO WIDTH SPACE at character 3"),
            ("/target/type", "doc\u{7}", "target.type contains U+0007 <control> at character 4"),
            ("/target/type", "東京\u{E0041}", "target.type contains U+E0041 <tag character> at character 3"),
        ];
        for (pointer, text, reason) in cases {
            let mut v = base.clone();
            *v.pointer_mut(pointer).unwrap() = json!(text);
            let err = identifier_hygiene(&mut v).unwrap_err();
            assert!(err.to_string().starts_with(reason), "{err}");
            assert!(!err.to_string().contains(text), "the reason names the code point, never prints it: {err}");
        }
        // Ordinary non-ASCII identifiers, and fields the rule does not cover, pass unchanged.
        let mut v = json!({"action": "a.b", "actor": {"type": "Benutzer", "id": "Zürich", "name": "\u{202E}eman"},
                           "target": {"type": "書類", "id": "東京"}, "context": {"tenantId": "Zürich", "requestId": "r\u{200B}"}});
        let before = v.clone();
        assert_eq!(identifier_hygiene(&mut v), Ok(vec![]));
        assert_eq!(v, before);
        let mut not_strings =
            json!({"action": 5, "actor": {"type": ["\u{202E}"], "id": 7}, "context": {"tenantId": null}});
        assert_eq!(identifier_hygiene(&mut not_strings), Ok(vec![]), "left to the contract's validation");
    }

    #[test]
    fn hidden_characters_in_actor_and_target_ids_are_replaced_deterministically_with_a_warning() {
        let input = json!({"action": "a.b", "actor": {"type": "user", "id": "ad\u{200B}min"},
                           "target": {"type": "file", "id": "\u{202E}fdp.exe\u{202C}\u{0}"}});
        let mut v = input.clone();
        let w = identifier_hygiene(&mut v).unwrap();
        assert_eq!(v["actor"]["id"], "ad\u{FFFD}min", "replaced, not removed: never another identity");
        assert_eq!(v["target"]["id"], "\u{FFFD}fdp.exe\u{FFFD}\u{FFFD}");
        assert_eq!(
            w,
            [
                "actor.id: U+200B ZERO WIDTH SPACE at character 3 replaced by U+FFFD (invisible and reordering characters are not kept in identifiers)",
                "target.id: 3 invisible or reordering characters replaced by U+FFFD, the first U+202E RIGHT-TO-LEFT OVERRIDE at character 1 (they are not kept in identifiers)",
            ]
        );
        let mut again = input;
        assert_eq!(identifier_hygiene(&mut again).unwrap(), w);
        assert_eq!(again, v, "deterministic");
        assert_eq!(identifier_hygiene(&mut v), Ok(vec![]), "a second pass changes nothing");
    }
}
