//! Who is in which room. Pure bookkeeping: no sockets, no queues, no async, so that every rule
//! (capacity, one room per peer, empty rooms vanish) is testable on its own.

use std::collections::HashMap;

use shared::{PeerId, RoomName};

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("already in room {0}")]
    AlreadyJoined(RoomName),
    #[error("room is full ({capacity} people)")]
    RoomFull { capacity: usize },
    #[error("the server has reached its limit of {max_rooms} rooms")]
    TooManyRooms { max_rooms: usize },
}

/// A peer left a room: who is still there (to be told), and the room's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub room: RoomName,
    pub remaining: Vec<PeerId>,
}

#[derive(Debug)]
pub struct Registry {
    /// Members of each room, in the order they joined. Never empty: a room is removed with its
    /// last member.
    rooms: HashMap<RoomName, Vec<PeerId>>,
    /// The reverse index, so that relaying and leaving do not scan rooms.
    room_of: HashMap<PeerId, RoomName>,
    capacity: usize,
    max_rooms: usize,
}

impl Registry {
    /// `capacity`: people per room (at least 1). `max_rooms`: rooms open at once.
    pub fn new(capacity: usize, max_rooms: usize) -> Self {
        Self {
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            capacity: capacity.max(1),
            max_rooms,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds `peer` to `room`, creating the room if needed. Returns the members that were already
    /// there, oldest first.
    pub fn join(&mut self, peer: PeerId, room: &RoomName) -> Result<Vec<PeerId>, JoinError> {
        if let Some(current) = self.room_of.get(&peer) {
            return Err(JoinError::AlreadyJoined(current.clone()));
        }
        match self.rooms.get_mut(room) {
            Some(members) => {
                if members.len() >= self.capacity {
                    return Err(JoinError::RoomFull {
                        capacity: self.capacity,
                    });
                }
                let before = members.clone();
                members.push(peer);
                self.room_of.insert(peer, room.clone());
                Ok(before)
            }
            None => {
                if self.rooms.len() >= self.max_rooms {
                    return Err(JoinError::TooManyRooms {
                        max_rooms: self.max_rooms,
                    });
                }
                self.rooms.insert(room.clone(), vec![peer]);
                self.room_of.insert(peer, room.clone());
                Ok(Vec::new())
            }
        }
    }

    /// Removes `peer` from its room, if it is in one. Removes the room when it becomes empty.
    pub fn leave(&mut self, peer: PeerId) -> Option<Departure> {
        let room = self.room_of.remove(&peer)?;
        let members = self.rooms.get_mut(&room)?;
        members.retain(|member| *member != peer);
        let remaining = members.clone();
        if remaining.is_empty() {
            self.rooms.remove(&room);
        }
        Some(Departure { room, remaining })
    }

    pub fn room_of(&self, peer: PeerId) -> Option<&RoomName> {
        self.room_of.get(&peer)
    }

    /// True when both peers are in the same room (and so may signal each other).
    pub fn same_room(&self, a: PeerId, b: PeerId) -> bool {
        match (self.room_of.get(&a), self.room_of.get(&b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    pub fn members(&self, room: &RoomName) -> &[PeerId] {
        self.rooms.get(room).map(Vec::as_slice).unwrap_or_default()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn peer_count(&self) -> usize {
        self.room_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u64) -> PeerId {
        PeerId::new(n)
    }
    fn r(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    #[test]
    fn join_returns_earlier_members_in_order() {
        let mut reg = Registry::new(3, 10);
        assert_eq!(reg.join(p(1), &r("a")), Ok(vec![]));
        assert_eq!(reg.join(p(2), &r("a")), Ok(vec![p(1)]));
        assert_eq!(reg.join(p(3), &r("a")), Ok(vec![p(1), p(2)]));
        assert_eq!(reg.members(&r("a")), &[p(1), p(2), p(3)]);
    }

    #[test]
    fn capacity_is_enforced_and_frees_up_on_leave() {
        let mut reg = Registry::new(2, 10);
        reg.join(p(1), &r("a")).unwrap();
        reg.join(p(2), &r("a")).unwrap();
        assert_eq!(
            reg.join(p(3), &r("a")),
            Err(JoinError::RoomFull { capacity: 2 })
        );
        assert_eq!(reg.room_of(p(3)), None);
        reg.leave(p(1));
        assert_eq!(reg.join(p(3), &r("a")), Ok(vec![p(2)]));
    }

    #[test]
    fn one_room_per_peer() {
        let mut reg = Registry::new(2, 10);
        reg.join(p(1), &r("a")).unwrap();
        assert_eq!(
            reg.join(p(1), &r("b")),
            Err(JoinError::AlreadyJoined(r("a")))
        );
        assert_eq!(reg.room_count(), 1);
    }

    #[test]
    fn empty_rooms_vanish() {
        let mut reg = Registry::new(2, 10);
        reg.join(p(1), &r("a")).unwrap();
        reg.join(p(2), &r("a")).unwrap();
        assert_eq!(
            reg.leave(p(1)),
            Some(Departure {
                room: r("a"),
                remaining: vec![p(2)]
            })
        );
        assert_eq!(
            reg.leave(p(2)),
            Some(Departure {
                room: r("a"),
                remaining: vec![]
            })
        );
        assert_eq!(reg.room_count(), 0);
        assert_eq!(reg.peer_count(), 0);
        assert_eq!(reg.leave(p(2)), None, "leaving twice is a no-op");
    }

    #[test]
    fn same_room_only_within_a_room() {
        let mut reg = Registry::new(2, 10);
        reg.join(p(1), &r("a")).unwrap();
        reg.join(p(2), &r("a")).unwrap();
        reg.join(p(3), &r("b")).unwrap();
        assert!(reg.same_room(p(1), p(2)));
        assert!(!reg.same_room(p(1), p(3)));
        assert!(!reg.same_room(p(1), p(4)));
    }

    #[test]
    fn room_limit_counts_only_new_rooms() {
        let mut reg = Registry::new(2, 1);
        reg.join(p(1), &r("a")).unwrap();
        assert_eq!(
            reg.join(p(2), &r("b")),
            Err(JoinError::TooManyRooms { max_rooms: 1 })
        );
        assert_eq!(reg.join(p(2), &r("a")), Ok(vec![p(1)]));
    }
}
