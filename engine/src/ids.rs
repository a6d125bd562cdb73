//! Typed indexes into one configuration generation's [`crate::snapshot::Snapshot`]: a
//! frontend, a backend, a server. They are made only by the snapshot (from positions it
//! validated), so a lookup with one cannot miss within its generation; a request keeps
//! the snapshot it started with, so its ids stay valid across a reload.

/// A frontend of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendId(pub(crate) u32);

/// A backend of one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub(crate) u32);

/// A server of one snapshot (all backends' servers in one flat list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub(crate) u32);

macro_rules! index {
    ($t:ident) => {
        impl $t {
            /// Its position in the snapshot's list (for per-id tables of the same size).
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }

            /// The id at position `i` of a list built from the same snapshot.
            #[inline]
            pub(crate) fn at(i: usize) -> Self {
                $t(i as u32)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

index!(FrontendId);
index!(BackendId);
index!(ServerId);
