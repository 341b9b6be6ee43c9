//! Validated text: room names, display names, chat messages and passcodes. Each is a newtype
//! whose only constructor checks it, and whose `Deserialize` goes through that constructor, so
//! a value of the type is always valid — on the server (what a client sent) and in the browser
//! (what the server relayed) alike.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a piece of text was refused. The `Display` text is a sentence fragment for people
/// ("a room name cannot be empty"); `what` names the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} cannot be empty")]
    Empty { what: &'static str },
    #[error("{what} can have at most {max} characters (this one has {len})")]
    TooLong {
        what: &'static str,
        max: usize,
        len: usize,
    },
    #[error("{what} can be at most {max} bytes long (this one is {len})")]
    TooManyBytes {
        what: &'static str,
        max: usize,
        len: usize,
    },
    #[error("{what} cannot contain control characters such as tabs or line breaks")]
    ControlCharacter { what: &'static str },
    #[error("{what} cannot start or end with a space")]
    SurroundingWhitespace { what: &'static str },
}

/// The rules one kind of text follows.
struct Rules {
    what: &'static str,
    /// Most characters (Unicode scalar values).
    max_chars: usize,
    /// Most UTF-8 bytes (what the wire and the server's memory pay for).
    max_bytes: usize,
    may_be_empty: bool,
    /// Line breaks and tabs allowed (chat), other control characters never.
    multiline: bool,
    /// Leading or trailing white space refused (names, which people retype).
    trimmed: bool,
}

impl Rules {
    fn check(&self, text: &str) -> Result<(), TextError> {
        let what = self.what;
        if !self.may_be_empty && text.trim().is_empty() {
            return Err(TextError::Empty { what });
        }
        if text.len() > self.max_bytes {
            return Err(TextError::TooManyBytes {
                what,
                max: self.max_bytes,
                len: text.len(),
            });
        }
        let len = text.chars().count();
        if len > self.max_chars {
            return Err(TextError::TooLong {
                what,
                max: self.max_chars,
                len,
            });
        }
        let allowed = |c: char| self.multiline && matches!(c, '\n' | '\t');
        if text.chars().any(|c| c.is_control() && !allowed(c)) {
            return Err(TextError::ControlCharacter { what });
        }
        if self.trimmed && text.trim() != text {
            return Err(TextError::SurroundingWhitespace { what });
        }
        Ok(())
    }
}

/// Defines a validated text newtype: constructor, `as_str`, serde through the constructor,
/// `Display` (or a redacted `Debug`/`Display` for secrets).
macro_rules! validated_text {
    ($(#[$doc:meta])* $name:ident, $rules:expr, redacted = $redacted:tt) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(text: impl Into<String>) -> Result<Self, TextError> {
                let text = text.into();
                $rules.check(&text)?;
                Ok(Self(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = TextError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        validated_text!(@fmt $name, $redacted);
    };
    (@fmt $name:ident, false) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
    (@fmt $name:ident, true) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

/// Largest room name, in characters (not bytes).
pub const ROOM_NAME_MAX_CHARS: usize = 64;
/// Largest display name, in characters.
pub const DISPLAY_NAME_MAX_CHARS: usize = 32;
/// Largest chat message, in UTF-8 bytes.
pub const CHAT_MAX_BYTES: usize = 2048;
/// Largest passcode, in characters.
pub const PASSCODE_MAX_CHARS: usize = 64;

validated_text!(
    /// A room name: 1 to 64 characters, no control characters, no leading or trailing white
    /// space. Any other Unicode is fine ("Café", "팀 회의", "a/b").
    RoomName,
    Rules {
        what: "a room name",
        max_chars: ROOM_NAME_MAX_CHARS,
        max_bytes: ROOM_NAME_MAX_CHARS * 4,
        may_be_empty: false,
        multiline: false,
        trimmed: true,
    },
    redacted = false
);

validated_text!(
    /// What a participant is called on the others' tiles and in the chat: 1 to 32 characters,
    /// no control characters, no surrounding white space. Shown as text, never as HTML.
    DisplayName,
    Rules {
        what: "a name",
        max_chars: DISPLAY_NAME_MAX_CHARS,
        max_bytes: DISPLAY_NAME_MAX_CHARS * 4,
        may_be_empty: false,
        multiline: false,
        trimmed: true,
    },
    redacted = false
);

validated_text!(
    /// One chat message: not blank, at most [`CHAT_MAX_BYTES`] bytes; line breaks and tabs are
    /// allowed, other control characters are not. Shown as text, never as HTML.
    ChatText,
    Rules {
        what: "a chat message",
        max_chars: CHAT_MAX_BYTES,
        max_bytes: CHAT_MAX_BYTES,
        may_be_empty: false,
        multiline: true,
        trimmed: false,
    },
    redacted = false
);

validated_text!(
    /// A room passcode as typed: up to 64 characters, possibly empty (locking with an empty
    /// passcode means "no more newcomers"). Never printed: `Debug` is redacted and there is no
    /// `Display`.
    Passcode,
    Rules {
        what: "a passcode",
        max_chars: PASSCODE_MAX_CHARS,
        max_bytes: PASSCODE_MAX_CHARS * 4,
        may_be_empty: true,
        multiline: false,
        trimmed: false,
    },
    redacted = true
);

impl Passcode {
    /// The empty passcode: locking with it closes the room to newcomers.
    pub fn empty() -> Self {
        Self(String::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_accept_ordinary_text() {
        for ok in [
            "a",
            "team sync",
            "Café",
            "팀 회의",
            "a/b?c",
            &"x".repeat(64),
        ] {
            assert_eq!(RoomName::new(ok).map(|r| r.to_string()), Ok(ok.to_string()));
        }
        // 64 multi-byte characters are fine: the limit is in characters.
        assert!(RoomName::new("é".repeat(64)).is_ok());
    }

    #[test]
    fn room_names_reject_with_a_reason() {
        let what = "a room name";
        assert_eq!(RoomName::new(""), Err(TextError::Empty { what }));
        assert_eq!(RoomName::new("   "), Err(TextError::Empty { what }));
        assert_eq!(
            RoomName::new("x".repeat(65)),
            Err(TextError::TooLong {
                what,
                max: 64,
                len: 65
            })
        );
        assert_eq!(
            RoomName::new("a\tb"),
            Err(TextError::ControlCharacter { what })
        );
        assert_eq!(
            RoomName::new("a\u{7f}"),
            Err(TextError::ControlCharacter { what })
        );
        assert_eq!(
            RoomName::new(" a"),
            Err(TextError::SurroundingWhitespace { what })
        );
        assert_eq!(
            RoomName::new("x".repeat(70)).unwrap_err().to_string(),
            "a room name can have at most 64 characters (this one has 70)"
        );
    }

    #[test]
    fn names_chat_and_passcodes() {
        assert!(DisplayName::new("Guest 12").is_ok());
        assert!(DisplayName::new("x".repeat(33)).is_err());
        assert!(DisplayName::new("").is_err());
        assert!(ChatText::new("line one\nline two\twith a tab").is_ok());
        assert!(ChatText::new("bell\u{7}").is_err());
        assert!(ChatText::new(" \n ").is_err());
        assert!(ChatText::new("é".repeat(1024)).is_ok());
        assert!(matches!(
            ChatText::new("é".repeat(1025)),
            Err(TextError::TooManyBytes { max: 2048, .. })
        ));
        assert!(Passcode::new("").unwrap().is_empty());
        assert!(Passcode::new("x".repeat(65)).is_err());
        let secret = Passcode::new("hunter2").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
