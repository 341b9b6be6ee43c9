//! Who is in which room, and what each room remembers. Pure bookkeeping: no sockets, no queues,
//! no async, no clock of its own (times are passed in), so that every rule is testable alone.
//!
//! This is the state that several server nodes would share, and its methods are the narrow
//! interface such a shared registry (Redis, say) would implement; each one is a single atomic
//! step:
//! - seats: [`Registry::join`] (capacity, room limit, lock admission, a new room's lock),
//!   [`Registry::leave`], [`Registry::hold`] / [`Registry::reconnect`] / [`Registry::due`]
//!   (the grace period of a dropped connection), [`Registry::set_media`];
//! - reads: [`Registry::seat`], [`Registry::room_of`], [`Registry::members`];
//! - the lock: [`Registry::lock`], [`Registry::set_lock`], [`Registry::take_attempt`];
//! - chat history: [`Registry::push_chat`], [`Registry::chat`] (a join also returns it).
//!
//! What it does not hold: outbound queues and messages kept for a seat while it reconnects (a
//! node's own business), and anything about connections.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use shared::{
    ChatEntry, DisplayName, LockState, MediaState, Member, PeerId, RoomName, CHAT_HISTORY,
};

use crate::passcode::{Attempts, PasscodeHash, Rate};

/// Why a join was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The id already has a seat (in `0`).
    #[error("peer already has a seat in room {0}")]
    SeatTaken(RoomName),
    #[error("room is full ({capacity} people)")]
    RoomFull { capacity: usize },
    #[error("the server has reached its limit of {max_rooms} rooms")]
    TooManyRooms { max_rooms: usize },
    /// The room is locked and the admission does not open it (see [`Admission`]). `generation`
    /// identifies this lock, for [`Admission::Passcode`].
    #[error("room is locked ({lock:?})")]
    Locked { lock: LockState, generation: u64 },
}

/// What lets a joiner past a room's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Nothing: only an open room (or a new one).
    Newcomer,
    /// A valid resume token: the seat was this person's, so any lock lets them back.
    Member,
    /// The passcode was checked against the lock of this generation. If the room was locked
    /// again since (another generation), the check proves nothing and the join is refused
    /// with the new lock's details.
    Passcode { generation: u64 },
}

/// A room's lock, as stored: only a salted hash of a passcode, and only in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RoomLock {
    #[default]
    Open,
    /// No newcomers at all.
    Closed,
    Passcode(Arc<PasscodeHash>),
}

impl RoomLock {
    pub fn state(&self) -> LockState {
        match self {
            RoomLock::Open => LockState::Open,
            RoomLock::Closed => LockState::Closed,
            RoomLock::Passcode(_) => LockState::Passcode,
        }
    }
}

/// One person's place in a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub id: PeerId,
    pub name: DisplayName,
    /// The last media state the person announced (new members get it in `joined`).
    pub media: MediaState,
    /// Set while the person's connection is gone and the seat is kept for them: until this
    /// monotonic millisecond.
    pub held_until: Option<u64>,
}

impl Seat {
    pub fn new(id: PeerId, name: DisplayName) -> Self {
        Self {
            id,
            name,
            media: MediaState::default(),
            held_until: None,
        }
    }

    /// How the others see this seat.
    pub fn member(&self) -> Member {
        Member {
            id: self.id,
            name: self.name.clone(),
            media: self.media.clone(),
            reconnecting: self.held_until.is_some(),
        }
    }
}

/// A successful join: what the newcomer needs to know about the room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entered {
    /// The members that were already there, oldest first.
    pub others: Vec<Member>,
    pub lock: LockState,
    /// The room's recent chat, oldest first.
    pub chat: Vec<ChatEntry>,
    /// The join created the room.
    pub created: bool,
}

/// A peer left a room: who is still there (to be told), and the room's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub room: RoomName,
    pub remaining: Vec<PeerId>,
}

#[derive(Debug)]
struct Room {
    /// In the order they joined. Never empty: a room is removed with its last seat.
    seats: Vec<Seat>,
    lock: RoomLock,
    /// Identifies the current lock: new for every [`Registry::set_lock`] and every room created,
    /// never reused (so a passcode checked against a room that has since been emptied and
    /// created again, locked with another passcode, admits no one).
    generation: u64,
    /// Chat history and passcode attempts, allocated when first needed: most rooms use neither,
    /// and every open room pays for what is inline.
    extra: Option<Box<RoomExtra>>,
}

#[derive(Debug, Default)]
struct RoomExtra {
    chat: VecDeque<ChatEntry>,
    /// Passcode attempts against this room (created on the first one).
    attempts: Option<Attempts>,
}

impl Room {
    fn others(&self, peer: PeerId) -> Vec<PeerId> {
        self.seats
            .iter()
            .map(|s| s.id)
            .filter(|id| *id != peer)
            .collect()
    }
}

#[derive(Debug)]
pub struct Registry {
    rooms: HashMap<RoomName, Room>,
    /// The reverse index, so that relaying and leaving do not scan rooms.
    room_of: HashMap<PeerId, RoomName>,
    /// Held seats by deadline, for [`Registry::due`].
    deadlines: BTreeSet<(u64, PeerId)>,
    capacity: usize,
    max_rooms: usize,
    room_attempts: Rate,
    /// The last lock generation handed out.
    generations: u64,
}

impl Registry {
    /// `capacity`: people per room (at least 1). `max_rooms`: rooms open at once.
    /// `room_attempts`: passcode attempts per room.
    pub fn new(capacity: usize, max_rooms: usize, room_attempts: Rate) -> Self {
        Self {
            rooms: HashMap::new(),
            room_of: HashMap::new(),
            deadlines: BTreeSet::new(),
            capacity: capacity.max(1),
            max_rooms,
            room_attempts,
            generations: 0,
        }
    }

    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Seats `seat` in `room`, creating the room (locked with `lock_if_new`) if needed.
    pub fn join(
        &mut self,
        room: &RoomName,
        seat: Seat,
        admission: Admission,
        lock_if_new: RoomLock,
    ) -> Result<Entered, JoinError> {
        if let Some(current) = self.room_of.get(&seat.id) {
            return Err(JoinError::SeatTaken(current.clone()));
        }
        let id = seat.id;
        let entered = match self.rooms.get_mut(room) {
            Some(existing) => {
                let admitted = match (&existing.lock, admission) {
                    (RoomLock::Open, _) | (_, Admission::Member) => true,
                    (RoomLock::Passcode(_), Admission::Passcode { generation }) => {
                        generation == existing.generation
                    }
                    _ => false,
                };
                if !admitted {
                    return Err(JoinError::Locked {
                        lock: existing.lock.state(),
                        generation: existing.generation,
                    });
                }
                if existing.seats.len() >= self.capacity {
                    return Err(JoinError::RoomFull {
                        capacity: self.capacity,
                    });
                }
                let entered = Entered {
                    others: existing.seats.iter().map(Seat::member).collect(),
                    lock: existing.lock.state(),
                    chat: existing
                        .extra
                        .as_ref()
                        .map(|extra| extra.chat.iter().cloned().collect())
                        .unwrap_or_default(),
                    created: false,
                };
                existing.seats.push(seat);
                entered
            }
            None => {
                if self.rooms.len() >= self.max_rooms {
                    return Err(JoinError::TooManyRooms {
                        max_rooms: self.max_rooms,
                    });
                }
                let lock = lock_if_new.state();
                let generation = self.next_generation();
                self.rooms.insert(
                    room.clone(),
                    Room {
                        seats: vec![seat],
                        lock: lock_if_new,
                        generation,
                        extra: None,
                    },
                );
                Entered {
                    others: Vec::new(),
                    lock,
                    chat: Vec::new(),
                    created: true,
                }
            }
        };
        self.room_of.insert(id, room.clone());
        Ok(entered)
    }

    /// Removes `peer`'s seat, if it has one. Removes the room (its lock and chat with it) when
    /// it becomes empty.
    pub fn leave(&mut self, peer: PeerId) -> Option<Departure> {
        let room = self.room_of.remove(&peer)?;
        let members = self.rooms.get_mut(&room)?;
        if let Some(seat) = members.seats.iter().find(|s| s.id == peer) {
            if let Some(until) = seat.held_until {
                self.deadlines.remove(&(until, peer));
            }
        }
        members.seats.retain(|s| s.id != peer);
        let remaining: Vec<PeerId> = members.seats.iter().map(|s| s.id).collect();
        if remaining.is_empty() {
            self.rooms.remove(&room);
        }
        Some(Departure { room, remaining })
    }

    fn seat_mut(&mut self, peer: PeerId) -> Option<(&mut Room, usize)> {
        let room = self.rooms.get_mut(self.room_of.get(&peer)?)?;
        let index = room.seats.iter().position(|s| s.id == peer)?;
        Some((room, index))
    }

    /// Keeps `peer`'s seat for someone whose connection dropped, until `until_ms`. Returns the
    /// others in the room (to be told it is reconnecting); `None` if it has no seat.
    pub fn hold(&mut self, peer: PeerId, until_ms: u64) -> Option<Vec<PeerId>> {
        let (room, index) = self.seat_mut(peer)?;
        let previous = room.seats[index].held_until.replace(until_ms);
        let others = room.others(peer);
        if let Some(previous) = previous {
            self.deadlines.remove(&(previous, peer));
        }
        self.deadlines.insert((until_ms, peer));
        Some(others)
    }

    /// `peer` is connected again. Returns the others in the room (to be told); `None` if it has
    /// no seat.
    pub fn reconnect(&mut self, peer: PeerId) -> Option<Vec<PeerId>> {
        let (room, index) = self.seat_mut(peer)?;
        let previous = room.seats[index].held_until.take();
        let others = room.others(peer);
        if let Some(previous) = previous {
            self.deadlines.remove(&(previous, peer));
        }
        Some(others)
    }

    /// Held seats whose deadline is at or before `now_ms`, earliest first (still seated: the
    /// caller decides, and calls [`Registry::leave`]).
    pub fn due(&self, now_ms: u64) -> Vec<PeerId> {
        self.deadlines
            .range(..=(now_ms, PeerId::new(u64::MAX)))
            .map(|(_, peer)| *peer)
            .collect()
    }

    /// The earliest deadline of a held seat.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(until, _)| *until)
    }

    /// Records `peer`'s media state. Returns the others in the room (to be told).
    pub fn set_media(&mut self, peer: PeerId, media: MediaState) -> Option<Vec<PeerId>> {
        let (room, index) = self.seat_mut(peer)?;
        room.seats[index].media = media;
        Some(room.others(peer))
    }

    pub fn seat(&self, peer: PeerId) -> Option<&Seat> {
        let room = self.rooms.get(self.room_of.get(&peer)?)?;
        room.seats.iter().find(|s| s.id == peer)
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

    /// The seats of `room`, oldest first (empty if there is no such room).
    pub fn members(&self, room: &RoomName) -> &[Seat] {
        self.rooms
            .get(room)
            .map(|r| r.seats.as_slice())
            .unwrap_or_default()
    }

    /// `room`'s lock and its generation; `None` if there is no such room.
    pub fn lock(&self, room: &RoomName) -> Option<(RoomLock, u64)> {
        self.rooms.get(room).map(|r| (r.lock.clone(), r.generation))
    }

    /// Locks or opens `room`; returns the new lock's generation (`None`: no such room).
    pub fn set_lock(&mut self, room: &RoomName, lock: RoomLock) -> Option<u64> {
        let generation = self.next_generation();
        let room = self.rooms.get_mut(room)?;
        room.lock = lock;
        room.generation = generation;
        Some(generation)
    }

    /// Takes one passcode attempt from `room`'s allowance (a room that does not exist yet has
    /// no allowance to spend: true).
    pub fn take_attempt(&mut self, room: &RoomName, now_ms: u64) -> bool {
        let rate = self.room_attempts;
        match self.rooms.get_mut(room) {
            Some(room) => room
                .extra
                .get_or_insert_with(Box::default)
                .attempts
                .get_or_insert_with(|| Attempts::full(rate, now_ms))
                .try_take(rate, now_ms),
            None => true,
        }
    }

    /// `room`'s recent chat, oldest first.
    pub fn chat(&self, room: &RoomName) -> Vec<ChatEntry> {
        self.rooms
            .get(room)
            .and_then(|r| r.extra.as_ref())
            .map(|extra| extra.chat.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Adds a chat message to `room`'s history, forgetting the oldest beyond [`CHAT_HISTORY`].
    pub fn push_chat(&mut self, room: &RoomName, entry: ChatEntry) {
        if let Some(room) = self.rooms.get_mut(room) {
            let chat = &mut room.extra.get_or_insert_with(Box::default).chat;
            if chat.len() >= CHAT_HISTORY {
                chat.pop_front();
            }
            chat.push_back(entry);
        }
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn peer_count(&self) -> usize {
        self.room_of.len()
    }

    /// Seats kept for someone whose connection dropped.
    pub fn held_count(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use ring::rand::SystemRandom;
    use shared::{ChatText, Passcode};

    use super::*;

    const NO_LIMIT: Rate = Rate { per_minute: 0 };

    fn p(n: u64) -> PeerId {
        PeerId::new(n)
    }
    fn r(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }
    fn seat(n: u64) -> Seat {
        Seat::new(p(n), DisplayName::new(format!("Guest {n}")).unwrap())
    }
    fn ids(members: &[Member]) -> Vec<PeerId> {
        members.iter().map(|m| m.id).collect()
    }
    fn join(reg: &mut Registry, n: u64, room: &str) -> Result<Vec<PeerId>, JoinError> {
        reg.join(&r(room), seat(n), Admission::Newcomer, RoomLock::Open)
            .map(|e| ids(&e.others))
    }

    #[test]
    fn join_returns_earlier_members_in_order() {
        let mut reg = Registry::new(3, 10, NO_LIMIT);
        assert_eq!(join(&mut reg, 1, "a"), Ok(vec![]));
        assert_eq!(join(&mut reg, 2, "a"), Ok(vec![p(1)]));
        assert_eq!(join(&mut reg, 3, "a"), Ok(vec![p(1), p(2)]));
        let members: Vec<_> = reg.members(&r("a")).iter().map(|s| s.id).collect();
        assert_eq!(members, [p(1), p(2), p(3)]);
    }

    #[test]
    fn capacity_is_enforced_and_frees_up_on_leave() {
        let mut reg = Registry::new(2, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        join(&mut reg, 2, "a").unwrap();
        assert_eq!(
            join(&mut reg, 3, "a"),
            Err(JoinError::RoomFull { capacity: 2 })
        );
        assert_eq!(reg.room_of(p(3)), None);
        reg.leave(p(1));
        assert_eq!(join(&mut reg, 3, "a"), Ok(vec![p(2)]));
    }

    #[test]
    fn one_seat_per_id() {
        let mut reg = Registry::new(2, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        assert_eq!(join(&mut reg, 1, "b"), Err(JoinError::SeatTaken(r("a"))));
        assert_eq!(join(&mut reg, 1, "a"), Err(JoinError::SeatTaken(r("a"))));
        assert_eq!(reg.room_count(), 1);
    }

    #[test]
    fn empty_rooms_vanish_with_their_lock_and_chat() {
        let mut reg = Registry::new(2, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        join(&mut reg, 2, "a").unwrap();
        reg.set_lock(&r("a"), RoomLock::Closed);
        reg.push_chat(
            &r("a"),
            ChatEntry {
                from: p(1),
                name: DisplayName::new("A").unwrap(),
                text: ChatText::new("hi").unwrap(),
                at: 1,
            },
        );
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
        let fresh = reg
            .join(&r("a"), seat(3), Admission::Newcomer, RoomLock::Open)
            .unwrap();
        assert_eq!(fresh.lock, LockState::Open);
        assert!(fresh.chat.is_empty() && fresh.created);
    }

    #[test]
    fn same_room_only_within_a_room() {
        let mut reg = Registry::new(2, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        join(&mut reg, 2, "a").unwrap();
        join(&mut reg, 3, "b").unwrap();
        assert!(reg.same_room(p(1), p(2)));
        assert!(!reg.same_room(p(1), p(3)));
        assert!(!reg.same_room(p(1), p(4)));
    }

    #[test]
    fn room_limit_counts_only_new_rooms() {
        let mut reg = Registry::new(2, 1, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        assert_eq!(
            join(&mut reg, 2, "b"),
            Err(JoinError::TooManyRooms { max_rooms: 1 })
        );
        assert_eq!(join(&mut reg, 2, "a"), Ok(vec![p(1)]));
    }

    #[test]
    fn held_seats_stay_until_reconnected_or_due() {
        let mut reg = Registry::new(3, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        join(&mut reg, 2, "a").unwrap();
        join(&mut reg, 3, "a").unwrap();
        assert_eq!(reg.hold(p(2), 1_000), Some(vec![p(1), p(3)]));
        assert_eq!(reg.hold(p(3), 2_000), Some(vec![p(1), p(2)]));
        assert_eq!(reg.hold(p(9), 2_000), None);
        assert_eq!(reg.held_count(), 2);
        assert!(reg.seat(p(2)).unwrap().member().reconnecting);
        // Still seated: counts toward capacity, and newcomers see it as reconnecting.
        assert_eq!(
            join(&mut reg, 4, "a"),
            Err(JoinError::RoomFull { capacity: 3 })
        );
        assert_eq!(reg.next_deadline(), Some(1_000));
        assert_eq!(reg.due(999), Vec::<PeerId>::new());
        assert_eq!(reg.due(1_000), vec![p(2)]);
        assert_eq!(reg.due(5_000), vec![p(2), p(3)]);
        assert_eq!(reg.reconnect(p(3)), Some(vec![p(1), p(2)]));
        assert!(!reg.seat(p(3)).unwrap().member().reconnecting);
        assert_eq!(reg.due(5_000), vec![p(2)]);
        reg.leave(p(2));
        assert_eq!(reg.due(5_000), Vec::<PeerId>::new());
        assert_eq!(reg.held_count(), 0);
    }

    #[test]
    fn media_state_is_kept_for_newcomers() {
        let mut reg = Registry::new(3, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        let media = MediaState {
            muted: true,
            camera_off: true,
            screen: Some("s".into()),
        };
        assert_eq!(reg.set_media(p(1), media.clone()), Some(vec![]));
        let entered = reg
            .join(&r("a"), seat(2), Admission::Newcomer, RoomLock::Open)
            .unwrap();
        assert_eq!(entered.others[0].media, media);
        assert_eq!(reg.set_media(p(7), media), None);
    }

    #[test]
    fn locks_admit_by_kind() {
        let mut reg = Registry::new(4, 10, NO_LIMIT);
        let hash = PasscodeHash::new(
            &Passcode::new("x").unwrap(),
            NonZeroU32::new(1).unwrap(),
            &SystemRandom::new(),
        )
        .unwrap();
        let created = reg
            .join(
                &r("a"),
                seat(1),
                Admission::Newcomer,
                RoomLock::Passcode(Arc::new(hash.clone())),
            )
            .unwrap();
        assert_eq!(created.lock, LockState::Passcode);
        let Err(JoinError::Locked {
            lock: LockState::Passcode,
            generation: first,
        }) = join(&mut reg, 2, "a")
        else {
            panic!("a newcomer without a passcode is refused");
        };
        let passcode = |generation| Admission::Passcode { generation };
        assert!(reg
            .join(&r("a"), seat(2), passcode(first), RoomLock::Open)
            .is_ok());
        // Locked again: a check against the old lock no longer admits.
        let second = reg
            .set_lock(&r("a"), RoomLock::Passcode(Arc::new(hash.clone())))
            .unwrap();
        assert_ne!(second, first);
        assert!(matches!(
            reg.join(&r("a"), seat(3), passcode(first), RoomLock::Open),
            Err(JoinError::Locked { generation, .. }) if generation == second
        ));
        let closed = reg.set_lock(&r("a"), RoomLock::Closed).unwrap();
        assert!(matches!(
            reg.join(&r("a"), seat(3), passcode(closed), RoomLock::Open),
            Err(JoinError::Locked {
                lock: LockState::Closed,
                ..
            })
        ));
        // A member with a resume token is let back in whatever the lock.
        assert!(reg
            .join(&r("a"), seat(3), Admission::Member, RoomLock::Open)
            .is_ok());
        reg.set_lock(&r("a"), RoomLock::Open);
        assert_eq!(join(&mut reg, 4, "a"), Ok(vec![p(1), p(2), p(3)]));
        // Emptied and created again with another passcode: a check against the old room's lock
        // (whatever its generation) admits no one.
        for id in 1..=4 {
            reg.leave(p(id));
        }
        reg.join(
            &r("a"),
            seat(5),
            Admission::Newcomer,
            RoomLock::Passcode(Arc::new(hash)),
        )
        .unwrap();
        for old in [first, second, closed] {
            assert!(reg
                .join(&r("a"), seat(6), passcode(old), RoomLock::Open)
                .is_err());
        }
    }

    #[test]
    fn chat_history_keeps_the_last_fifty() {
        let mut reg = Registry::new(2, 10, NO_LIMIT);
        join(&mut reg, 1, "a").unwrap();
        for i in 0..(CHAT_HISTORY as u64 + 7) {
            reg.push_chat(
                &r("a"),
                ChatEntry {
                    from: p(1),
                    name: DisplayName::new("A").unwrap(),
                    text: ChatText::new(format!("message {i}")).unwrap(),
                    at: i,
                },
            );
        }
        let entered = reg
            .join(&r("a"), seat(2), Admission::Newcomer, RoomLock::Open)
            .unwrap();
        assert_eq!(entered.chat.len(), CHAT_HISTORY);
        assert_eq!(entered.chat[0].at, 7);
        assert_eq!(entered.chat[CHAT_HISTORY - 1].at, CHAT_HISTORY as u64 + 6);
    }

    #[test]
    fn room_attempts_are_limited_per_room() {
        let mut reg = Registry::new(2, 10, Rate { per_minute: 2 });
        join(&mut reg, 1, "a").unwrap();
        join(&mut reg, 2, "b").unwrap();
        assert!(reg.take_attempt(&r("a"), 0));
        assert!(reg.take_attempt(&r("a"), 0));
        assert!(!reg.take_attempt(&r("a"), 0));
        assert!(reg.take_attempt(&r("b"), 0), "another room is unaffected");
        assert!(reg.take_attempt(&r("nowhere"), 0));
        assert!(reg.take_attempt(&r("a"), 30_000));
    }
}
